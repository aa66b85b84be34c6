"""Input no view should ever meet."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse


class RejectUnstorableInputMiddleware:
    """A 400 for a NUL character in the path, the query string or a submitted form.

    No database column can hold NUL (PostgreSQL refuses it in text), so a NUL that reaches a query
    is a 500 somewhere; refusing it here covers every view, present and future, at once. Raw JSON
    bodies (API, ingest) are checked by their own parsers.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if self._has_nul(request):
            message = "the request contains a NUL character"
            if request.path.startswith("/api/"):
                return JsonResponse({"error": message}, status=400)
            return HttpResponseBadRequest(message)
        return self.get_response(request)

    @staticmethod
    def _has_nul(request: HttpRequest) -> bool:
        if "\x00" in request.path:
            return True
        if any("\x00" in key or any("\x00" in v for v in values) for key, values in request.GET.lists()):
            return True
        if request.method == "POST" and request.content_type == "application/x-www-form-urlencoded":
            return any("\x00" in key or any("\x00" in v for v in values) for key, values in request.POST.lists())
        return False

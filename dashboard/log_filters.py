"""Logging filters of the web app."""

from __future__ import annotations

import logging

from django.core.exceptions import PermissionDenied


class ForbiddenWithoutTraceback(logging.Filter):
    """A refused permission is an expected answer, not a fault: Django logs it on `django.request`
    with the exception attached, which prints a whole traceback for every 403. Keep the one line
    ("Forbidden (Permission denied): /path") and drop the traceback; every other record passes
    untouched, so a real error keeps its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc_info = record.exc_info
        if exc_info and isinstance(exc_info, tuple) and isinstance(exc_info[1], PermissionDenied):
            record.exc_info = None
            record.exc_text = None
        return True

from __future__ import annotations

from django.conf import settings
from django.db import models

from agentops.fields import RedactedCharField, RedactedTextField


class PullRequestStatus(models.TextChoices):
    OPEN = "open"
    MERGED = "merged"
    CLOSED = "closed"


class PullRequest(models.Model):
    """A pull request of the local forge (GitHub keeps its own)."""

    repo = models.CharField(max_length=200)
    number = models.PositiveIntegerField()
    title = RedactedCharField(max_length=300)
    body = RedactedTextField(blank=True)
    branch = models.CharField(max_length=250)
    base = models.CharField(max_length=250)
    head_sha = models.CharField(max_length=64, blank=True)
    base_sha = models.CharField(max_length=64, blank=True)
    # The change as `git diff base...branch` when opened (refreshed when the branch moves).
    diff = RedactedTextField(blank=True)
    changed_lines = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=10, choices=PullRequestStatus.choices, default=PullRequestStatus.OPEN)
    draft = models.BooleanField(default=False)
    run = models.ForeignKey("runs.Run", null=True, blank=True, on_delete=models.SET_NULL, related_name="pull_requests")
    author_label = models.CharField(max_length=150, default="agent")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    merged_at = models.DateTimeField(null=True, blank=True)
    merged_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    merged_by_label = models.CharField(max_length=150, blank=True)
    merge_sha = models.CharField(max_length=64, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["repo", "number"], name="pull_request_number_unique_per_repo"),
            models.UniqueConstraint(
                fields=["repo", "branch"],
                condition=models.Q(status="open"),
                name="one_open_pull_request_per_branch",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.repo}#{self.number}: {self.title}"


class PullRequestComment(models.Model):
    pull_request = models.ForeignKey(PullRequest, on_delete=models.CASCADE, related_name="comments")
    author_label = models.CharField(max_length=150)
    body = RedactedTextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"comment on {self.pull_request}"

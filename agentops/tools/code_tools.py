"""Tools of the debugging agent: error tracker, repository, sandbox, git and forge.

Each domain lives in its own module (``errors``, ``repo``, ``git``, ``pull_requests``; shared helpers in
``common``), and ``agentops.tools.catalog`` imports them. This module only re-exports their executors, so
that ``AGENTOPS_TOOL_MODULES`` and older imports naming ``agentops.tools.code_tools`` still work.
"""

from __future__ import annotations

# Import order is registration order (the tool list the model sees): keep it, do not sort.
# isort: off
from agentops.tools.errors import error_get_group, error_list_events, format_stacktrace
from agentops.tools.repo import apply_patch, repo_list_files, repo_read_file, repo_search, run_command, run_tests, write_file
from agentops.tools.git import git_commit
from agentops.tools.pull_requests import WRITE_TOOLS, comment_pull_request, merge_is_low_risk, merge_pull_request, open_pull_request, submit_report
# isort: on

__all__ = [
    "WRITE_TOOLS",
    "apply_patch",
    "comment_pull_request",
    "error_get_group",
    "error_list_events",
    "format_stacktrace",
    "git_commit",
    "merge_is_low_risk",
    "merge_pull_request",
    "open_pull_request",
    "repo_list_files",
    "repo_read_file",
    "repo_search",
    "run_command",
    "run_tests",
    "submit_report",
    "write_file",
]

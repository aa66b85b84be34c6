"""A pull request on a real local-forge repository, with hidden context to expand (issue 12)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

BASE = "".join(f"def f{n}(x):\n    return x + {n}\n\n" for n in range(1, 21))


def seed_expand_pull_request(agent: Any) -> int:
    from agentops.forges.base import ChangeSet
    from agentops.forges.local import LocalForge, local_repo_create

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "pkg").mkdir()
        (Path(tmp) / "pkg" / "funcs.py").write_text(BASE)
        local_repo_create("expand-demo", tmp)
    forge = LocalForge(actor="agent:debugger")
    forge.push_branch("expand-demo", "agent/f10", ChangeSet(message="f10 adds 100", files={"pkg/funcs.py": BASE.replace("x + 10\n", "x + 100\n")}))
    info = forge.open_pull_request("expand-demo", "agent/f10", "main", "Make f10 add 100", "Changes **one** line.", False)
    return int(info.extra["id"])

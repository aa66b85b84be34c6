"""A small GitHub REST API on a real socket: the endpoints the GitHub forge uses, backed by memory.

    with FakeGitHub() as gh:
        gh.add_repo("acme/checkout", files={"app.py": "print(1)\\n"}, protected=["release"])
        forge = GitHubForge(token="t", base_url=gh.base_url, ...)

Mounted under /api/v3 like GitHub Enterprise, so `base_url` handling is exercised. Records every
request (`gh.requests`) so tests can assert that a refused action never reached the server. Git
objects are content-addressed like git's (sha1 over a canonical JSON), branch updates must be
fast-forwards unless forced, and protected branches refuse direct updates.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

TOKEN = "ghp_fake_token_for_tests_0000000000000000"


def _sha(kind: str, obj: Any) -> str:
    return hashlib.sha1(f"{kind}:{json.dumps(obj, sort_keys=True)}".encode()).hexdigest()


class FakeRepo:
    def __init__(self, owner: str, name: str, files: dict[str, str], default_branch: str, protected: list[str]) -> None:
        self.owner, self.name = owner, name
        self.default_branch = default_branch
        self.protected = set(protected)
        self.trees: dict[str, dict[str, str]] = {}
        self.commits: dict[str, dict[str, Any]] = {}
        self.branches: dict[str, str] = {}
        self.pulls: dict[int, dict[str, Any]] = {}
        self.comments: list[dict[str, Any]] = []
        root = self.commit(self.tree(dict(files)), [], "Initial commit")
        self.branches[default_branch] = root
        for branch in protected:
            self.branches.setdefault(branch, root)

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"

    def tree(self, files: dict[str, str]) -> str:
        sha = _sha("tree", files)
        self.trees[sha] = files
        return sha

    def commit(self, tree: str, parents: list[str], message: str) -> str:
        body = {"tree": tree, "parents": parents, "message": message}
        sha = _sha("commit", body)
        self.commits[sha] = body
        return sha

    def ancestors(self, sha: str) -> set[str]:
        seen, todo = set(), [sha]
        while todo:
            current = todo.pop()
            if current in seen:
                continue
            seen.add(current)
            todo += self.commits[current]["parents"]
        return seen

    def files_at(self, branch: str) -> dict[str, str]:
        return self.trees[self.commits[self.branches[branch]]["tree"]]


class FakeGitHub:
    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.repos: dict[str, FakeRepo] = {}
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else {}
                with fake.lock:
                    fake.requests.append((method, self.path))
                    status, payload = fake.route(method, self.path, body, self.headers.get("Authorization", ""))
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._handle("GET")

            def do_POST(self) -> None:
                self._handle("POST")

            def do_PATCH(self) -> None:
                self._handle("PATCH")

            def do_PUT(self) -> None:
                self._handle("PUT")

            def do_DELETE(self) -> None:
                self._handle("DELETE")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    # --- lifecycle ---------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/api/v3"

    def __enter__(self) -> FakeGitHub:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add_repo(self, full_name: str, *, files: dict[str, str], default_branch: str = "main", protected: list[str] | None = None) -> FakeRepo:
        owner, name = full_name.split("/")
        repo = FakeRepo(owner, name, files, default_branch, protected or [])
        self.repos[full_name] = repo
        return repo

    def writes(self) -> list[tuple[str, str]]:
        return [r for r in self.requests if r[0] != "GET"]

    # --- JSON shapes -------------------------------------------------------------------------

    def _repo_json(self, repo: FakeRepo) -> dict[str, Any]:
        url = f"{self.base_url}/repos/{repo.full_name}"
        return {
            "id": abs(hash(repo.full_name)) % 10**8,
            "name": repo.name,
            "full_name": repo.full_name,
            "owner": {"login": repo.owner},
            "default_branch": repo.default_branch,
            "url": url,
            "html_url": f"https://github.example/{repo.full_name}",
            "private": True,
        }

    def _commit_json(self, repo: FakeRepo, sha: str) -> dict[str, Any]:
        base = f"{self.base_url}/repos/{repo.full_name}/git"
        commit = repo.commits[sha]
        return {
            "sha": sha,
            "url": f"{base}/commits/{sha}",
            "message": commit["message"],
            "tree": {"sha": commit["tree"], "url": f"{base}/trees/{commit['tree']}"},
            "parents": [{"sha": p, "url": f"{base}/commits/{p}"} for p in commit["parents"]],
            "author": {"name": "x", "email": "x@example.com", "date": "2025-01-01T00:00:00Z"},
        }

    def _ref_json(self, repo: FakeRepo, branch: str) -> dict[str, Any]:
        base = f"{self.base_url}/repos/{repo.full_name}/git"
        sha = repo.branches[branch]
        return {"ref": f"refs/heads/{branch}", "url": f"{base}/refs/heads/{branch}", "object": {"sha": sha, "type": "commit", "url": f"{base}/commits/{sha}"}}

    def _pull_json(self, repo: FakeRepo, number: int) -> dict[str, Any]:
        pr = repo.pulls[number]
        url = f"{self.base_url}/repos/{repo.full_name}"
        return {
            "id": number * 1000,
            "number": number,
            "url": f"{url}/pulls/{number}",
            "issue_url": f"{url}/issues/{number}",
            "html_url": f"https://github.example/{repo.full_name}/pull/{number}",
            "state": pr["state"],
            "title": pr["title"],
            "body": pr["body"],
            "draft": pr["draft"],
            "merged": pr["merged"],
            "merge_commit_sha": pr.get("merge_sha"),
            "head": {"ref": pr["head"], "sha": repo.branches.get(pr["head"], ""), "label": f"{repo.owner}:{pr['head']}"},
            "base": {"ref": pr["base"], "sha": repo.branches.get(pr["base"], ""), "label": f"{repo.owner}:{pr['base']}"},
        }

    # --- routing -----------------------------------------------------------------------------

    def route(self, method: str, raw_path: str, body: dict[str, Any], authorization: str) -> tuple[int, Any]:
        if authorization not in (f"token {self.token}", f"Bearer {self.token}"):
            return 401, {"message": "Bad credentials"}
        parts = urlsplit(raw_path)
        path = parts.path
        query = parse_qs(parts.query)
        if not path.startswith("/api/v3/repos/"):
            return 404, {"message": "Not Found"}
        match = re.match(r"^/api/v3/repos/([^/]+)/([^/]+)(/.*)?$", path)
        if not match:
            return 404, {"message": "Not Found"}
        repo = self.repos.get(f"{match.group(1)}/{match.group(2)}")
        if repo is None:
            return 404, {"message": "Not Found"}
        rest = match.group(3) or ""
        key = (method, rest)

        if key == ("GET", ""):
            return 200, self._repo_json(repo)
        if key == ("GET", "/branches"):
            return 200, [{"name": b, "commit": {"sha": s, "url": ""}, "protected": b in repo.protected} for b, s in sorted(repo.branches.items())]
        if method == "GET" and (m := re.match(r"^/git/ref/heads/(.+)$", rest)):
            branch = unquote(m.group(1))
            if branch not in repo.branches:
                return 404, {"message": "Not Found"}
            return 200, self._ref_json(repo, branch)
        if method == "GET" and (m := re.match(r"^/git/commits/([0-9a-f]+)$", rest)):
            if m.group(1) not in repo.commits:
                return 404, {"message": "Not Found"}
            return 200, self._commit_json(repo, m.group(1))
        if method == "GET" and (m := re.match(r"^/contents/(.+)$", rest)):
            # The contents API for one file at a branch or commit (no directories, no LFS).
            ref = (query.get("ref") or [repo.default_branch])[0]
            sha = repo.branches.get(ref, ref)
            files = repo.trees.get(repo.commits[sha]["tree"], {}) if sha in repo.commits else None
            name = unquote(m.group(1))
            if files is None or name not in files:
                return 404, {"message": "Not Found"}
            data = files[name].encode()
            return 200, {
                "type": "file",
                "encoding": "base64",
                "size": len(data),
                "name": name.rsplit("/", 1)[-1],
                "path": name,
                "sha": _sha("blob", files[name]),
                "content": base64.b64encode(data).decode(),
            }
        if key == ("POST", "/git/trees"):
            files = dict(repo.trees.get(body.get("base_tree") or "", {}))
            for element in body.get("tree", []):
                if element.get("sha", "missing") is None:
                    files.pop(element["path"], None)
                elif "content" in element:
                    files[element["path"]] = element["content"]
                else:
                    return 422, {"message": "only inline content is supported by the fake"}
            sha = repo.tree(files)
            return 201, {"sha": sha, "url": f"{self.base_url}/repos/{repo.full_name}/git/trees/{sha}", "tree": []}
        if key == ("POST", "/git/commits"):
            if body.get("tree") not in repo.trees or any(p not in repo.commits for p in body.get("parents", [])):
                return 422, {"message": "tree or parent not found"}
            sha = repo.commit(body["tree"], body.get("parents", []), body.get("message", ""))
            return 201, self._commit_json(repo, sha)
        if key == ("POST", "/git/refs"):
            ref = body.get("ref", "")
            if not ref.startswith("refs/heads/"):
                return 422, {"message": "only branches"}
            branch = ref.removeprefix("refs/heads/")
            if branch in repo.branches:
                return 422, {"message": "Reference already exists"}
            if body.get("sha") not in repo.commits:
                return 422, {"message": "Object does not exist"}
            repo.branches[branch] = body["sha"]
            return 201, self._ref_json(repo, branch)
        if method == "PATCH" and (m := re.match(r"^/git/refs/heads/(.+)$", rest)):
            branch = unquote(m.group(1))
            if branch not in repo.branches:
                return 422, {"message": "Reference does not exist"}
            if branch in repo.protected:
                return 422, {"message": "Protected branch update failed"}
            new = body.get("sha")
            if new not in repo.commits:
                return 422, {"message": "Object does not exist"}
            if not body.get("force") and repo.branches[branch] not in repo.ancestors(new):
                return 422, {"message": "Update is not a fast forward"}
            repo.branches[branch] = new
            return 200, self._ref_json(repo, branch)
        if key == ("POST", "/pulls"):
            head, base = body.get("head", ""), body.get("base", "")
            head = head.split(":", 1)[-1]
            if head not in repo.branches or base not in repo.branches:
                return 422, {"message": "Validation Failed", "errors": [{"message": "head or base does not exist"}]}
            for pr in repo.pulls.values():
                if pr["head"] == head and pr["state"] == "open":
                    return 422, {"message": "Validation Failed", "errors": [{"message": f"A pull request already exists for {repo.owner}:{head}."}]}
            number = len(repo.pulls) + 1
            repo.pulls[number] = {
                "title": body.get("title", ""),
                "body": body.get("body", ""),
                "head": head,
                "base": base,
                "draft": bool(body.get("draft", False)),
                "state": "open",
                "merged": False,
            }
            return 201, self._pull_json(repo, number)
        if key == ("GET", "/pulls"):
            state = (query.get("state") or ["open"])[0]
            head = (query.get("head") or [""])[0].split(":", 1)[-1]
            return 200, [
                self._pull_json(repo, n)
                for n, pr in sorted(repo.pulls.items())
                if (state == "all" or pr["state"] == state) and (not head or pr["head"] == head)
            ]
        if (m := re.match(r"^/pulls/(\d+)(/merge)?$", rest)) and int(m.group(1)) in repo.pulls:
            number = int(m.group(1))
            pr = repo.pulls[number]
            if method == "GET" and not m.group(2):
                return 200, self._pull_json(repo, number)
            if method == "PATCH" and not m.group(2):
                for field in ("title", "body"):
                    if field in body:
                        pr[field] = body[field]
                return 200, self._pull_json(repo, number)
            if method == "PUT" and m.group(2):
                if pr["draft"]:
                    return 405, {"message": "Pull Request is still a draft"}
                if pr["state"] != "open":
                    return 405, {"message": "Pull Request is not mergeable"}
                base_sha, head_sha = repo.branches[pr["base"]], repo.branches[pr["head"]]
                if base_sha not in repo.ancestors(head_sha):
                    return 405, {"message": "Pull Request is not mergeable (base moved)"}
                sha = repo.commit(repo.commits[head_sha]["tree"], [base_sha, head_sha], f"Merge pull request #{number}")
                repo.branches[pr["base"]] = sha
                pr.update(state="closed", merged=True, merge_sha=sha)
                return 200, {"sha": sha, "merged": True, "message": "Pull Request successfully merged"}
        if method == "POST" and (m := re.match(r"^/issues/(\d+)/comments$", rest)):
            number = int(m.group(1))
            if number not in repo.pulls:
                return 404, {"message": "Not Found"}
            cid = len(repo.comments) + 1
            comment = {
                "id": cid,
                "body": body.get("body", ""),
                "issue": number,
                "url": f"{self.base_url}/repos/{repo.full_name}/issues/comments/{cid}",
                "html_url": f"https://github.example/{repo.full_name}/pull/{number}#issuecomment-{cid}",
            }
            repo.comments.append(comment)
            return 201, comment
        return 404, {"message": f"Not Found: {method} {rest}"}

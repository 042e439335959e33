"""A local HTTP server that speaks the part of GitHub's REST API the ``github-pr`` agent uses (the
Git Data API: refs, commits, trees, blobs; and pull requests), for the real ``githubkit`` client to
talk to in tests.

It holds one in-memory repository per ``owner/name`` (``add_repo``): branches → commit → tree of
files, content-addressed like git (the same tree has the same sha). Every request is recorded with
its method, path, headers and JSON body. ``fail(...)`` queues faults served to the next matching
requests: an error status (500, 401, 422, 429 with Retry-After) or a hang.

    fake = FakeGitHub(token="ghp_...")
    repo = fake.add_repo("acme/app", {"README.md": "hello\\n"})
    fake.fail(500, times=2)                           # the next two requests answer 500
    fake.fail(429, retry_after_s=1, match="POST /pulls")
    server = RunningApp(fake.app(), port)             # tests/conftest.py
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse


@dataclass
class Received:
    method: str
    path: str  # below /repos/{owner}/{name}, e.g. /git/trees
    headers: dict[str, str]
    body: Any

    @property
    def name(self) -> str:
        return f"{self.method} {self.path}"


@dataclass
class Fault:
    status: int = 500
    message: str = "Server Error"
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  # a hang: answer only after this long (or when the fake closes)
    match: str = ""  # a substring of "<METHOD> <path>" (e.g. "POST /pulls"); empty: any request


@dataclass
class Commit:
    sha: str
    tree: str
    parents: list[str]
    message: str


@dataclass
class Pull:
    number: int
    title: str
    body: str
    head: str
    base: str
    head_sha: str
    state: str = "open"


@dataclass
class Repo:
    owner: str
    name: str
    blobs: dict[str, bytes] = field(default_factory=dict)
    trees: dict[str, dict[str, tuple[str, str]]] = field(default_factory=dict)  # sha → path → (mode, blob sha)
    commits: dict[str, Commit] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)  # "heads/main" → commit sha
    pulls: list[Pull] = field(default_factory=list)

    def blob(self, data: bytes) -> str:
        sha = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        self.blobs[sha] = data
        return sha

    def tree(self, entries: dict[str, tuple[str, str]]) -> str:
        text = "\n".join(f"{mode} {sha} {path}" for path, (mode, sha) in sorted(entries.items()))
        sha = hashlib.sha1(b"tree " + text.encode()).hexdigest()
        self.trees[sha] = dict(entries)
        return sha

    def commit(self, tree: str, parents: list[str], message: str) -> str:
        text = f"tree {tree}\n" + "".join(f"parent {p}\n" for p in parents) + f"\n{message}\n{len(self.commits)}"
        sha = hashlib.sha1(b"commit " + text.encode()).hexdigest()
        self.commits[sha] = Commit(sha, tree, list(parents), message)
        return sha

    def files(self, ref_or_sha: str) -> dict[str, str]:
        """The files (path → text) of a branch or commit."""
        sha = self.refs.get(f"heads/{ref_or_sha}", ref_or_sha)
        tree = self.trees[self.commits[sha].tree]
        return {path: self.blobs[blob].decode() for path, (_, blob) in tree.items()}

    def modes(self, ref_or_sha: str) -> dict[str, str]:
        sha = self.refs.get(f"heads/{ref_or_sha}", ref_or_sha)
        return {path: mode for path, (mode, _) in self.trees[self.commits[sha].tree].items()}

    def head(self, branch: str) -> Commit:
        return self.commits[self.refs[f"heads/{branch}"]]


_numbers = itertools.count(1)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"message": message, "documentation_url": "https://docs.github.com/rest", "status": str(status)}
    return JSONResponse(body, status_code=status, headers=headers or {})


class FakeGitHub:
    def __init__(self, token: str) -> None:
        self.token = token
        self.repos: dict[str, Repo] = {}
        self.received: list[Received] = []
        self.faults: deque[Fault] = deque()
        self._closed = asyncio.Event()

    def add_repo(
        self, full_name: str, files: dict[str, str], *, branch: str = "main", modes: dict[str, str] | None = None
    ) -> Repo:
        owner, name = full_name.split("/")
        repo = Repo(owner, name)
        entries = {path: ((modes or {}).get(path, "100644"), repo.blob(text.encode())) for path, text in files.items()}
        repo.refs[f"heads/{branch}"] = repo.commit(repo.tree(entries), [], "initial commit")
        self.repos[full_name] = repo
        return repo

    def fail(
        self,
        status: int = 500,
        *,
        times: int = 1,
        message: str | None = None,
        retry_after_s: float | None = None,
        match: str = "",
    ) -> None:
        headers = {"retry-after": f"{retry_after_s:g}"} if retry_after_s is not None else {}
        default = {401: "Bad credentials", 422: "Validation Failed", 429: "API rate limit exceeded"}
        for _ in range(times):
            self.faults.append(Fault(status, message or default.get(status, "Server Error"), headers, match=match))

    def hang(self, seconds: float = 60.0, *, times: int = 1, match: str = "") -> None:
        for _ in range(times):
            self.faults.append(Fault(200, delay_s=seconds, match=match))

    def close(self) -> None:
        """Release every hanging request (call before stopping the server)."""
        self._closed.set()

    def _fault(self, received: Received) -> Fault | None:
        for fault in self.faults:
            if fault.match in received.name:
                self.faults.remove(fault)
                return fault
        return None

    def _authorised(self, headers: dict[str, str]) -> bool:
        scheme, _, value = headers.get("authorization", "").partition(" ")
        return scheme.lower() in ("token", "bearer") and value == self.token

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.api_route("/repos/{owner}/{name}/{rest:path}", methods=["GET", "POST", "PATCH"])
        async def route(owner: str, name: str, rest: str, request: Request) -> JSONResponse:
            raw = await request.body()
            body = await request.json() if raw else None
            path = "/" + rest
            received = Received(request.method, path, dict(request.headers), body)
            self.received.append(received)
            fault = self._fault(received)
            if fault is not None and fault.delay_s:
                try:
                    await asyncio.wait_for(self._closed.wait(), timeout=fault.delay_s)
                except TimeoutError:
                    pass
                return _error(504, "too late")
            if fault is not None:
                return _error(fault.status, fault.message, fault.headers)
            if not self._authorised(received.headers):
                return _error(401, "Bad credentials")
            repo = self.repos.get(f"{owner}/{name}")
            if repo is None:
                return _error(404, "Not Found")
            return handle(repo, request.method, path, body or {}, dict(request.query_params))

        def handle(repo: Repo, method: str, path: str, body: dict[str, Any], query: dict[str, str]) -> JSONResponse:
            parts = path.strip("/").split("/")
            if method == "GET" and parts[:2] == ["git", "ref"]:
                ref = "/".join(parts[2:])
                if ref not in repo.refs:
                    return _error(404, "Not Found")
                sha = repo.refs[ref]
                return JSONResponse({"ref": f"refs/{ref}", "object": {"sha": sha, "type": "commit"}})
            if method == "GET" and parts[:2] == ["git", "commits"]:
                commit = repo.commits.get(parts[2])
                if commit is None:
                    return _error(404, "Not Found")
                return JSONResponse(commit_json(commit))
            if method == "GET" and parts[:2] == ["git", "trees"]:
                tree = repo.trees.get(parts[2])
                if tree is None:
                    return _error(404, "Not Found")
                listed = [
                    {"path": p, "mode": m, "type": "blob", "sha": s, "size": len(repo.blobs[s])}
                    for p, (m, s) in sorted(tree.items())
                ]
                return JSONResponse({"sha": parts[2], "tree": listed, "truncated": False})
            if method == "GET" and parts[:2] == ["git", "blobs"]:
                data = repo.blobs.get(parts[2])
                if data is None:
                    return _error(404, "Not Found")
                content = base64.b64encode(data).decode()
                return JSONResponse({"sha": parts[2], "content": content, "encoding": "base64", "size": len(data)})
            if method == "POST" and path == "/git/blobs":
                data = (
                    base64.b64decode(body["content"]) if body.get("encoding") == "base64" else body["content"].encode()
                )
                return JSONResponse({"sha": repo.blob(data)}, status_code=201)
            if method == "POST" and path == "/git/trees":
                entries: dict[str, tuple[str, str]] = (
                    dict(repo.trees[body["base_tree"]]) if body.get("base_tree") else {}
                )
                for entry in body["tree"]:
                    if entry.get("sha") is None and "content" not in entry:
                        if entry["path"] not in entries:
                            return _error(422, f"GitRPC::BadObjectState: {entry['path']} does not exist")
                        del entries[entry["path"]]
                    elif entry.get("sha") is not None:
                        if entry["sha"] not in repo.blobs:
                            return _error(422, "tree.sha is not a valid blob")
                        entries[entry["path"]] = (entry["mode"], entry["sha"])
                    else:
                        entries[entry["path"]] = (entry["mode"], repo.blob(entry["content"].encode()))
                sha = repo.tree(entries)
                return JSONResponse({"sha": sha, "tree": [], "truncated": False}, status_code=201)
            if method == "POST" and path == "/git/commits":
                if body["tree"] not in repo.trees or any(p not in repo.commits for p in body.get("parents", [])):
                    return _error(422, "Tree or parent SHA does not exist")
                sha = repo.commit(body["tree"], body.get("parents", []), body["message"])
                return JSONResponse(commit_json(repo.commits[sha]), status_code=201)
            if method == "POST" and path == "/git/refs":
                ref = body["ref"].removeprefix("refs/")
                if ref in repo.refs:
                    return _error(422, "Reference already exists")
                if body["sha"] not in repo.commits:
                    return _error(422, "Object does not exist")
                repo.refs[ref] = body["sha"]
                return JSONResponse({"ref": body["ref"], "object": {"sha": body["sha"], "type": "commit"}}, 201)
            if method == "POST" and path == "/pulls":
                head, base = body["head"], body["base"]
                if f"heads/{head}" not in repo.refs or f"heads/{base}" not in repo.refs:
                    return _error(422, "Validation Failed: head or base does not exist")
                if any(p.head == head and p.base == base and p.state == "open" for p in repo.pulls):
                    return _error(422, f"A pull request already exists for {repo.owner}:{head}.")
                pull = Pull(
                    next(_numbers), body["title"], body.get("body") or "", head, base, repo.refs[f"heads/{head}"]
                )
                repo.pulls.append(pull)
                return JSONResponse(pull_json(repo, pull), status_code=201)
            if method == "GET" and path == "/pulls":
                head = query.get("head", "")
                found = [
                    pull_json(repo, p)
                    for p in repo.pulls
                    if p.state == query.get("state", "open") and (not head or f"{repo.owner}:{p.head}" == head)
                ]
                return JSONResponse(found)
            return _error(404, f"Not Found: the fake does not serve {method} {path}")

        def commit_json(commit: Commit) -> dict[str, Any]:
            return {
                "sha": commit.sha,
                "tree": {"sha": commit.tree},
                "parents": [{"sha": p} for p in commit.parents],
                "message": commit.message,
            }

        def pull_json(repo: Repo, pull: Pull) -> dict[str, Any]:
            return {
                "number": pull.number,
                "state": pull.state,
                "title": pull.title,
                "body": pull.body,
                "html_url": f"https://github.example/{repo.owner}/{repo.name}/pull/{pull.number}",
                "head": {"ref": pull.head, "sha": pull.head_sha},
                "base": {"ref": pull.base},
            }

        return app

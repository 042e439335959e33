"""The ``github-pr`` agent: delivers a unified diff as a pull request through GitHub's REST API.

It reads the base branch's head commit and the files the diff touches at that commit, applies the
hunks (a diff that does not apply fails with VALIDATION before anything is written, in every mode),
then writes blobs, a tree and a commit whose parent is that head (the Git Data API), creates the
branch and opens the pull request. ``githubkit`` is the client (async, typed, any base URL); its own
retries and cache are off: a failed attempt is retried by the engine, as a step.

What a GitHub failure does depends on the mode (``COO_GITHUB_MODE``, or the input's ``mode``):
``fail_fast`` fails the step with GITHUB_FAILED (retryable for 429, 5xx, timeouts and network
errors; not for other 4xx), ``best_effort`` lets it succeed with ``pr: null``, a warning and a
``github.failed`` event, ``disabled`` never calls GitHub. The token is sent in the Authorization
header only: tool calls, errors, warnings and logs never carry it."""

from __future__ import annotations

import asyncio
import base64
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Literal

from githubkit import GitHub
from githubkit.exception import RateLimitExceeded, RequestError, RequestFailed, RequestTimeout
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from services.common.contracts import AttemptEvent
from services.common.errors import CooError, ErrorType
from services.common.logging import get_logger
from services.common.scrub import scrub_text
from services.common.status import ToolCallStatus
from services.worker.agents.code import CodeRun, code_agent
from services.worker.agents.diffs import FileChange, apply_patch, parse_diff
from services.worker.tools import ToolCall

log = get_logger(__name__)

GitHubMode = Literal["fail_fast", "best_effort", "disabled"]

_REPO_RE = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
_BRANCH_RE = re.compile(r"^(?!/)(?!.*//)(?!.*\.\.)(?!.*@\{)(?!.*\.lock$)(?!.*/$)(?!-)[A-Za-z0-9._/-]{1,200}$")
CALL_TIMEOUT_S = 60.0  # one GitHub request at most (and never past the step's own deadline)
DEADLINE_SHARE = 0.8  # of the step's timeout, for all of its GitHub calls: a failure is still reported


class GitHubPrInput(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    github_repo: str = Field(description="owner/name")
    base: str = Field(default="main", min_length=1, max_length=200)
    title: str = Field(min_length=1, max_length=256)
    body: str = Field(default="", max_length=65_536)
    diff: str = Field(min_length=1)
    branch: str | None = None
    mode: GitHubMode | None = None

    @field_validator("github_repo")
    @classmethod
    def _check_repo(cls, value: str) -> str:
        if not _REPO_RE.match(value):
            raise ValueError("must be 'owner/name'")
        return value

    @field_validator("base", "branch")
    @classmethod
    def _check_branch(cls, value: str | None) -> str | None:
        if value is not None and not _BRANCH_RE.match(value):
            raise ValueError("must be a branch name (letters, digits, '.', '_', '-', '/')")
        return value


class GitHubFailure(Exception):
    """A GitHub call that failed: ``status`` is the HTTP status, or ``timeout`` / ``network``."""

    def __init__(self, status: str, message: str, *, retryable: bool, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retryable = retryable
        self.retry_after_s = retry_after_s


class GitHubFailed(CooError):
    """GITHUB_FAILED, with the server's Retry-After (read by the runner) when it sent one."""

    def __init__(self, failure: GitHubFailure) -> None:
        super().__init__(ErrorType.GITHUB_FAILED, failure.message, retryable=failure.retryable)
        self.retry_after_s = failure.retry_after_s


def parse_input(raw: dict[str, Any]) -> GitHubPrInput:
    try:
        return GitHubPrInput.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "input"
        raise CooError(ErrorType.VALIDATION, f"github-pr input.{where}: {first['msg']}") from None


def _status_message(exc: RequestFailed) -> str:
    try:
        body = exc.response.json()
    except ValueError:
        body = None
    message = body.get("message") if isinstance(body, dict) else None
    return str(message) if message else exc.response.raw_response.reason_phrase or "error"


class GitHubCalls:
    """The calls of one attempt: each one a ToolCall, each failure a GitHubFailure."""

    def __init__(self, client: GitHub[Any], run: CodeRun, repo: str, deadline: float) -> None:
        self.client = client
        self.run = run
        self.owner, self.name = repo.split("/")
        self.deadline = deadline
        self.truncated = False  # the base tree was too big to list whole

    async def call(
        self, name: str, inputs: dict[str, Any], send: Callable[[], Awaitable[Any]], *, ok: tuple[int, ...] = ()
    ) -> Any:
        """``send()``'s JSON body; a status in ``ok`` comes back as ``{"status": <status>}`` instead of failing."""
        clock = time.perf_counter()
        loop = asyncio.get_running_loop()
        failure: GitHubFailure | None = None
        result: Any = None
        status = ToolCallStatus.OK
        try:
            async with asyncio.timeout_at(min(self.deadline, loop.time() + CALL_TIMEOUT_S)):
                response = await send()
            result = response.json()
            output = f"HTTP {response.status_code}"
        except RequestFailed as exc:
            code = exc.response.status_code
            message = _status_message(exc)
            output = f"HTTP {code}: {message}"
            if code in ok:
                result = {"status": code, "message": message}
            else:
                retry_after = exc.retry_after.total_seconds() if isinstance(exc, RateLimitExceeded) else None
                retryable = code == 429 or code >= 500 or isinstance(exc, RateLimitExceeded)
                failure = GitHubFailure(
                    str(code),
                    f"GitHub answered {code} to {name.removeprefix('github.')} on {self.owner}/{self.name}: {message}",
                    retryable=retryable,
                    retry_after_s=retry_after,
                )
        except (TimeoutError, RequestTimeout):
            output, status = "timed out", ToolCallStatus.TIMEOUT
            failure = GitHubFailure(
                "timeout", f"GitHub did not answer {name.removeprefix('github.')} in time", retryable=True
            )
        except RequestError as exc:
            output = f"network error: {type(exc.exc).__name__}"
            failure = GitHubFailure(
                "network", f"GitHub could not be reached ({type(exc.exc).__name__}): {exc.exc}", retryable=True
            )
        if failure is not None and status is ToolCallStatus.OK:
            status = ToolCallStatus.ERROR
        self.run.calls.append(
            ToolCall(
                name=name,
                input={"repo": f"{self.owner}/{self.name}", **inputs},
                output=scrub_text(output),
                status=status,
                duration_ms=int((time.perf_counter() - clock) * 1000),
            )
        )
        if failure is not None:
            raise failure
        return result

    # --- the endpoints ---------------------------------------------------------------------
    async def branch_head(self, branch: str) -> str:
        ref = await self.call(
            "github.get_ref",
            {"ref": f"heads/{branch}"},
            lambda: self.client.rest.git.async_get_ref(self.owner, self.name, f"heads/{branch}"),
        )
        return str(ref["object"]["sha"])

    async def commit(self, sha: str) -> dict[str, Any]:
        commit: dict[str, Any] = await self.call(
            "github.get_commit", {"sha": sha}, lambda: self.client.rest.git.async_get_commit(self.owner, self.name, sha)
        )
        return commit

    async def tree(self, sha: str) -> dict[str, tuple[str, str]]:
        """path → (mode, blob sha) of every file; a truncated (huge) tree lists only what it holds."""
        tree = await self.call(
            "github.get_tree",
            {"sha": sha, "recursive": True},
            lambda: self.client.rest.git.async_get_tree(self.owner, self.name, sha, recursive="1"),
        )
        entries = {e["path"]: (e["mode"], e["sha"]) for e in tree["tree"] if e.get("type") == "blob"}
        if tree.get("truncated"):
            self.truncated = True
        return entries

    async def content(self, path: str, commit: str) -> tuple[str, str] | None:
        """(blob sha, mode) of ``path`` at ``commit`` from the contents API (for a truncated tree)."""
        found = await self.call(
            "github.get_content",
            {"path": path, "ref": commit},
            lambda: self.client.rest.repos.async_get_content(self.owner, self.name, path, ref=commit),
            ok=(404,),
        )
        if not isinstance(found, dict) or found.get("type") != "file":  # missing (404), a directory, a link
            return None
        return str(found["sha"]), "100644"

    async def blob(self, sha: str) -> bytes:
        blob = await self.call(
            "github.get_blob", {"sha": sha}, lambda: self.client.rest.git.async_get_blob(self.owner, self.name, sha)
        )
        if blob.get("encoding") == "base64":
            return base64.b64decode(blob["content"])
        return str(blob["content"]).encode()

    async def create_blob(self, path: str, data: bytes) -> str:
        blob = await self.call(
            "github.create_blob",
            {"path": path, "bytes": len(data)},
            lambda: self.client.rest.git.async_create_blob(
                self.owner, self.name, content=base64.b64encode(data).decode(), encoding="base64"
            ),
        )
        return str(blob["sha"])

    async def create_tree(self, base_tree: str, entries: list[dict[str, Any]]) -> str:
        shown = [{"path": e["path"], "sha": e["sha"]} for e in entries]
        tree = await self.call(
            "github.create_tree",
            {"base_tree": base_tree, "tree": shown},
            lambda: self.client.rest.git.async_create_tree(
                self.owner,
                self.name,
                base_tree=base_tree,
                tree=entries,  # type: ignore[arg-type]  # TypedDicts of githubkit's own: plain dicts here
            ),
        )
        return str(tree["sha"])

    async def create_commit(self, message: str, tree: str, parent: str) -> str:
        commit = await self.call(
            "github.create_commit",
            {"tree": tree, "parents": [parent], "message": message},
            lambda: self.client.rest.git.async_create_commit(
                self.owner, self.name, message=message, tree=tree, parents=[parent]
            ),
        )
        return str(commit["sha"])

    async def create_ref(self, branch: str, sha: str) -> dict[str, Any]:
        created: dict[str, Any] = await self.call(
            "github.create_ref",
            {"ref": f"refs/heads/{branch}", "sha": sha},
            lambda: self.client.rest.git.async_create_ref(self.owner, self.name, ref=f"refs/heads/{branch}", sha=sha),
            ok=(422,),
        )
        return created

    async def create_pull(self, *, title: str, body: str, head: str, base: str) -> dict[str, Any]:
        pull: dict[str, Any] = await self.call(
            "github.create_pull",
            {"title": title, "head": head, "base": base},
            lambda: self.client.rest.pulls.async_create(
                self.owner, self.name, title=title, body=body, head=head, base=base
            ),
            ok=(422,),
        )
        return pull

    async def open_pull(self, head: str, base: str) -> dict[str, Any] | None:
        pulls = await self.call(
            "github.list_pulls",
            {"head": f"{self.owner}:{head}", "base": base, "state": "open"},
            lambda: self.client.rest.pulls.async_list(
                self.owner, self.name, head=f"{self.owner}:{head}", base=base, state="open"
            ),
        )
        return next((p for p in pulls if p.get("base", {}).get("ref") == base), None)


def default_branch(run: CodeRun) -> str:
    step = re.sub(r"[^A-Za-z0-9._-]+", "-", run.item.step_key).strip("-.") or "step"
    return f"coo/{str(run.item.mission_id)[:8]}-{step}"


async def deliver(calls: GitHubCalls, request: GitHubPrInput, changes: list[FileChange], branch: str) -> dict[str, Any]:
    """Read, apply (VALIDATION before any write), write, open: the pull request's number, url, branch."""
    head = await calls.branch_head(request.base)
    base_tree = str((await calls.commit(head))["tree"]["sha"])
    files = await calls.tree(base_tree)

    async def existing(path: str) -> tuple[str, str] | None:  # (blob sha, mode)
        if path in files:
            mode, sha = files[path]
            return sha, mode
        return await calls.content(path, head) if calls.truncated else None

    writes: list[tuple[str, str, str]] = []  # (path, mode, new text)
    deletes: list[str] = []
    for change in changes:
        text = ""
        mode = change.mode or "100644"
        if change.source is not None:
            found = await existing(change.source)
            if found is None:
                raise CooError(
                    ErrorType.VALIDATION,
                    f"the diff does not apply: {change.source} does not exist on {request.base}",
                )
            sha, mode = found[0], change.mode or found[1]
            try:
                text = (await calls.blob(sha)).decode()
            except UnicodeDecodeError:
                raise CooError(
                    ErrorType.VALIDATION, f"the diff does not apply: {change.source} is not UTF-8 text"
                ) from None
        elif change.target is not None and await existing(change.target) is not None:
            raise CooError(
                ErrorType.VALIDATION,
                f"the diff does not apply: {change.target} is added but already exists on {request.base}",
            )
        name = change.target or change.source or "?"
        result = apply_patch(name, text, change.patch)
        if change.target is None:
            if result:
                raise CooError(
                    ErrorType.VALIDATION, f"the diff does not apply: deleting {name} leaves lines of it behind"
                )
            deletes.append(name)
            continue
        if change.source is not None and change.source != change.target:  # a rename
            deletes.append(change.source)
        writes.append((change.target, mode, result))

    entries: list[dict[str, Any]] = []
    for path, mode, text in writes:
        entries.append(
            {"path": path, "mode": mode, "type": "blob", "sha": await calls.create_blob(path, text.encode())}
        )
    entries.extend({"path": path, "mode": "100644", "type": "blob", "sha": None} for path in deletes)
    tree = await calls.create_tree(base_tree, entries)
    message = request.title + (f"\n\n{request.body}" if request.body else "")
    commit = await calls.create_commit(message, tree, head)

    created = await calls.create_ref(branch, commit)
    if created.get("status") == 422:  # the branch exists: ours from an attempt before, or a conflict
        theirs = await calls.commit(await calls.branch_head(branch))
        if theirs["tree"]["sha"] != tree or [p["sha"] for p in theirs.get("parents", [])] != [head]:
            raise GitHubFailure(
                "422",
                f"GitHub answered 422 to create_ref on {request.github_repo}: branch {branch} already exists "
                "with other changes",
                retryable=False,
            )
    pull = await calls.create_pull(title=request.title, body=request.body, head=branch, base=request.base)
    if pull.get("status") == 422:  # one already open for this branch (an attempt before opened it)?
        opened = await calls.open_pull(branch, request.base)
        if opened is None:
            raise GitHubFailure(
                "422",
                f"GitHub answered 422 to create_pull on {request.github_repo}: {pull.get('message')}",
                retryable=False,
            )
        pull = opened
    return {"number": pull["number"], "url": pull["html_url"], "branch": branch}


@code_agent("github-pr")
async def github_pr(run: CodeRun) -> dict[str, Any]:
    request = parse_input(run.item.input)
    changes = parse_diff(request.diff)
    mode: GitHubMode = request.mode or run.settings.github_mode
    branch = request.branch or default_branch(run)
    out = run.tools.transcript_out
    out.append(f"github-pr: {len(changes)} file(s) for {request.github_repo} ({request.base} <- {branch}), {mode}")
    if mode == "disabled":
        out.append("github-pr: GitHub is disabled: no pull request")
        return {"pr": None, "mode": mode}
    try:
        pr = await _open(run, request, changes, branch)
    except GitHubFailure as failure:
        failure.message = scrub_text(failure.message)
        run.metrics.github_failures.labels(mode, failure.status).inc()
        log.warning(
            "github_failed",
            mode=mode,
            status=failure.status,
            detail=failure.message,
            retryable=failure.retryable,
            step=run.item.step_key,
        )
        if mode == "fail_fast":
            raise GitHubFailed(failure) from None
        run.events.append(
            AttemptEvent(
                type="github.failed",
                at=datetime.now(UTC),
                data={"status": failure.status, "message": failure.message, "mode": mode},
            )
        )
        run.tools.transcript_err.append(f"github-pr: no pull request: {failure.message}")
        return {"pr": None, "mode": mode, "warning": failure.message}
    out.append(f"github-pr: opened pull request #{pr['number']}: {pr['url']}")
    return {"pr": pr, "mode": mode}


async def _open(run: CodeRun, request: GitHubPrInput, changes: list[FileChange], branch: str) -> dict[str, Any]:
    token = run.settings.github_token.get_secret_value().strip() if run.settings.github_token else ""
    if not token:
        raise GitHubFailure("401", "COO_GITHUB_TOKEN is not set on the worker: no call to GitHub", retryable=False)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + run.item.timeout_s * DEADLINE_SHARE
    client: GitHub[Any] = GitHub(
        token,
        base_url=run.settings.github_api_url,
        timeout=CALL_TIMEOUT_S,
        auto_retry=False,  # the engine retries the step (backoff, Retry-After, max_attempts)
        http_cache=False,
        user_agent="coo-github-pr",
    )
    async with client:
        return await deliver(GitHubCalls(client, run, request.github_repo, deadline), request, changes, branch)

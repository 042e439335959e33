"""Offline scripts of the repository agents: real commands in the sandbox (the repository is copied
into the step's workspace from ``input.repo``), deterministic conclusions from what they print."""

from __future__ import annotations

import csv
import functools
import io
import re
import shlex
from dataclasses import dataclass
from typing import Any

import orjson

from services.common.scrub import scrub_text
from services.worker.llm.base import ChatRequest, ModelResponse, TextBlock, ToolResult, ToolUse
from services.worker.llm.offline import OFFLINE_MODEL, final, first_user_json, script, tool_results

_EXCLUDES = ["--exclude-dir=.git", "--exclude-dir=node_modules", "--exclude-dir=.venv", "--exclude-dir=.coo"]


@dataclass(frozen=True)
class Rule:
    name: str
    severity: str  # high | medium | low
    pattern: str  # POSIX ERE for grep -E and sed -E (the patcher replaces what it matches)
    ignore_case: bool = False
    secret: bool = True  # a value to take out of the code (the patcher replaces it)
    grep: bool = True  # the scanner greps for it; False: detect-secrets finds it under this name


# The secrets the patcher knows how to replace. detect-secrets finds AWS keys (its "AWS Access Key"
# findings take this rule's name); grep still looks for the rest, which detect-secrets does not name
# as the patcher needs: it has no Anthropic detector, reports Slack webhooks and Slack tokens alike,
# does not say which keyword (password or token) it matched, and puts a private key on the line
# after its BEGIN line, where the patcher's replacement (and the repo-health check) look.
RULES: tuple[Rule, ...] = (
    Rule("aws-access-key-id", "high", r"(AKIA|ASIA)[0-9A-Z]{16}", grep=False),
    Rule("anthropic-api-key", "high", r"sk-ant-[A-Za-z0-9_-]{8,}"),
    Rule("private-key", "high", r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    Rule("slack-webhook", "high", r"https://hooks\.slack\.com/services/[A-Za-z0-9/_-]+"),
    Rule("hardcoded-password", "medium", r"(password|passwd|pwd)[[:space:]]*[=:][[:space:]]*[\"'][^\"']+[\"']", True),
    Rule("hardcoded-token", "medium", r"(secret|token|api_?key)[[:space:]]*[=:][[:space:]]*[\"'][^\"']{8,}[\"']", True),
)
RULES_BY_NAME = {rule.name: rule for rule in RULES}
_GREP_LINE = re.compile(r"^(?:\./)?(?P<file>[^:\n]+):(?P<line>\d+):(?P<text>.*)$")
_EXIT = re.compile(r"^exit_code: (-?\d+)", re.MULTILINE)
_SEVERITIES = ("high", "medium", "low")


def parse_tool_output(result: ToolResult) -> tuple[int | None, str]:
    """(exit code, stdout) of a ``run_command`` result as the tool formats it."""
    match = _EXIT.search(result.content)
    stdout = result.content.split("stdout:\n", 1)[-1] if "stdout:\n" in result.content else ""
    stdout = stdout.split("\nstderr:\n", 1)[0]
    return (int(match.group(1)) if match else None), stdout.removesuffix(" [truncated]")


def _uses(request: ChatRequest, calls: list[tuple[str, str, dict[str, Any]]]) -> ModelResponse:
    """Several tool calls in one turn; ids carry a key so the next turn knows which is which."""
    turn = sum(1 for m in request.messages if m.role == "assistant")
    return ModelResponse(
        content=tuple(ToolUse(id=f"toolu_off_{turn}_{key}", name=name, input=args) for key, name, args in calls),
        stop_reason="tool_use",
        model=OFFLINE_MODEL,
    )


def _by_key(request: ChatRequest) -> dict[str, ToolResult]:
    return {r.tool_use_id.split("_", 3)[-1]: r for r in tool_results(request)}


def _repo_missing(request: ChatRequest) -> ModelResponse | None:
    if not isinstance(first_user_json(request).get("repo"), str):
        return final({"error": "input.repo (the repository directory) is required"})
    return None


def grep_argv(patterns: list[str], *options: str, ignore_case: bool = False) -> list[str]:
    """``grep -rnIE`` over the workspace; each pattern behind ``-e``, so that one starting with a
    dash (``-----BEGIN …``) is never taken for an option."""
    flags = "-rnIE" + ("i" if ignore_case else "")
    return ["grep", flags, *_EXCLUDES, *options, *(arg for p in patterns for arg in ("-e", p)), "."]


# --- security-scanner -------------------------------------------------------------------------
# Kept scanners, from uv.lock, on the PATH the sandbox gives commands: detect-secrets (secrets in
# every file) and bandit (Python risks). Their output never carries a secret's value: detect-secrets
# prints hashes, bandit's CSV has no source lines (its JSON has, escaped where the storage's scrubber
# does not look).
_SKIPPED = ("\\.git", "node_modules", "\\.venv", "\\.coo")
DETECT_SECRETS = [
    "detect-secrets",
    "scan",
    "--all-files",
    "--no-verify",  # no network call to check a key
    "--disable-plugin",
    "PrivateKeyDetector",  # grep's private-key rule finds the BEGIN line the patcher replaces
    "--exclude-files",
    "(^|/)(" + "|".join(_SKIPPED) + ")/",
    ".",
]
BANDIT = ["bandit", "-r", "-q", "-f", "csv", "--exit-zero", "-x", "./.git,./node_modules,./.venv,./.coo", "."]
# detect-secrets types the patcher knows by a rule's name; generic detectors are medium, the others
# (a provider's credential: Slack, GitHub, Stripe, JWT, …) high.
_DETECTED_AS = {"AWS Access Key": "aws-access-key-id"}
_GENERIC_SECRETS = {
    "Secret Keyword": "secret-keyword",
    "Base64 High Entropy String": "high-entropy-base64",
    "Hex High Entropy String": "high-entropy-hex",
}
_BANDIT_SECRETS = {"B105", "B106", "B107"}  # hard-coded passwords: the secrets above, seen again
# The text of found lines, one ``<index>:<text>`` line per (file, line, redact) triple; a line
# holding a secret is redacted in the sandbox (quoted values and long tokens), before it is printed.
_LINES = (
    'n=0; while [ "$#" -ge 3 ]; do'
    ' if [ "$3" = 1 ]; then text=$(sed -n -E "$2{s/[\\"\'][^\\"\']*[\\"\']/\\"[REDACTED]\\"/g;'
    's#[A-Za-z0-9+/=_-]{20,}#[REDACTED]#g;p;q;}" -- "$1");'
    ' else text=$(sed -n "$2{p;q;}" -- "$1"); fi;'
    ' printf \'%s:%s\\n\' "$n" "$text"; n=$((n+1)); shift 3; done'
)


@dataclass(frozen=True)
class Found:
    file: str
    line: int
    rule: str
    severity: str
    secret: bool  # its line's text is redacted in the sandbox
    snippet: str | None = None  # grep printed the line; else it is read in a second turn


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _detect_secrets(stdout: str) -> list[Found]:
    found = []
    for items in orjson.loads(stdout).get("results", {}).values():
        for item in items:
            kind = str(item["type"])
            rule = _DETECTED_AS.get(kind) or _GENERIC_SECRETS.get(kind) or _slug(kind)
            severity = "medium" if kind in _GENERIC_SECRETS else "high"
            found.append(Found(str(item["filename"]), int(item["line_number"]), rule, severity, secret=True))
    return found


def _bandit(stdout: str) -> list[Found]:
    """One finding per row of bandit's CSV; the rule is its test id and name (``B602-subprocess-…``;
    a blacklist test's name is the anchor of its ``more_info`` link: ``B307-eval``)."""
    found = []
    for row in csv.DictReader(io.StringIO(stdout)):
        test_id, name = row["test_id"], row["test_name"]
        anchor = row.get("more_info", "").rpartition("#")[2]
        if name == "blacklist" and anchor.startswith(test_id.lower() + "-"):
            name = anchor[len(test_id) + 1 :]
        severity = row["issue_severity"].lower()
        file = row["filename"].removeprefix("./")
        secret = test_id in _BANDIT_SECRETS
        rule = f"{test_id}-{_slug(name)}"
        found.append(Found(file, int(row["line_number"]), rule, severity if severity in _SEVERITIES else "low", secret))
    return found


def _grep(rule: Rule, stdout: str) -> list[Found]:
    found = []
    for raw in stdout.splitlines():
        if match := _GREP_LINE.match(raw):
            found.append(Found(match["file"], int(match["line"]), rule.name, rule.severity, True, match["text"]))
    return found


def _scanned(results: dict[str, ToolResult]) -> tuple[list[Found], list[str]]:
    """Every scanner's findings, one per line and rule; a line holding a secret the patcher knows
    keeps only the findings of the patcher's rules (detect-secrets and bandit see it as well)."""
    found: list[Found] = []
    errors: list[str] = []
    parsers: list[tuple[str, Any]] = [("detect-secrets", _detect_secrets), ("bandit", _bandit)]
    parsers += [(rule.name, functools.partial(_grep, rule)) for rule in RULES if rule.grep]
    for key, parse in parsers:
        if (result := results.get(key)) is None:
            errors.append(f"{key}: no result")
            continue
        code, stdout = parse_tool_output(result)
        ok = code in (0, 1) if key in RULES_BY_NAME else code == 0  # grep: 1 is "nothing found"
        try:
            found += parse(stdout) if ok else []
        except (ValueError, KeyError, TypeError) as exc:  # cut short or not what the tool prints
            errors.append(f"{key}: unreadable output ({exc!r}): {result.content[:300]}")
            continue
        if not ok:
            errors.append(f"{key}: {result.content[:300]}")
    known = {(f.file, f.line) for f in found if f.rule in RULES_BY_NAME}
    kept: dict[tuple[str, int, str], Found] = {}
    for f in found:
        if f.secret and f.rule not in RULES_BY_NAME and (f.file, f.line) in known:
            continue
        kept.setdefault((f.file, f.line, f.rule), f)
    return list(kept.values()), errors


def _lines_call(found: list[Found]) -> list[str]:
    needed = [f for f in found if f.snippet is None]
    return ["sh", "-c", _LINES, "sh", *(a for f in needed for a in (f.file, str(f.line), "1" if f.secret else "0"))]


@script("security-scanner")
def security_scanner(request: ChatRequest) -> ModelResponse:
    """detect-secrets, bandit and the grep rules the patcher still needs, in one turn; then the text
    of the lines the scanners named (grep prints its own); then the findings and their counts."""
    if (missing := _repo_missing(request)) is not None:
        return missing
    results = _by_key(request)
    if not results:
        calls = [
            ("detect-secrets", "run_command", {"argv": DETECT_SECRETS}),
            ("bandit", "run_command", {"argv": BANDIT}),
        ]
        calls += [
            (rule.name, "run_command", {"argv": grep_argv([rule.pattern], ignore_case=rule.ignore_case)})
            for rule in RULES
            if rule.grep
        ]
        return _uses(request, calls)
    found, errors = _scanned(results)
    needed = [f for f in found if f.snippet is None]
    if needed and "lines" not in results:
        return _uses(request, [("lines", "run_command", {"argv": _lines_call(found)})])
    texts: dict[int, str] = {}
    if needed:
        code, stdout = parse_tool_output(results["lines"])
        if code != 0:
            errors.append(f"lines: {results['lines'].content[:300]}")
        for raw in stdout.splitlines():
            index, sep, text = raw.partition(":")
            if sep and index.isdigit():
                texts[int(index)] = text
    position = {id(f): i for i, f in enumerate(needed)}
    findings = [
        {
            "file": f.file,
            "line": f.line,
            "rule": f.rule,
            "severity": f.severity,
            "snippet": scrub_text((f.snippet if f.snippet is not None else texts.get(position[id(f)], "")).strip())[
                :200
            ],
        }
        for f in found
    ]
    findings.sort(key=lambda f: (_SEVERITIES.index(f["severity"]), f["file"], f["line"], f["rule"]))
    summary = {"total": len(findings), **{s: sum(f["severity"] == s for f in findings) for s in _SEVERITIES}}
    output: dict[str, Any] = {"summary": summary, "findings": findings}
    if errors:
        output["errors"] = errors
    return final(output)


# --- code-reviewer ----------------------------------------------------------------------------
_REVIEW_CHECKS = {
    "todo": (grep_argv([r"\b(TODO|FIXME|XXX)\b"]), "unfinished work left in the code"),
    "bare-except": (grep_argv([r"except[[:space:]]*:"], "--include=*.py"), "bare except hides errors"),
    "print-debugging": (grep_argv([r"^[[:space:]]*print\("], "--include=*.py"), "print() instead of logging"),
}


@script("code-reviewer")
def code_reviewer(request: ChatRequest) -> ModelResponse:
    if (missing := _repo_missing(request)) is not None:
        return missing
    results = _by_key(request)
    if not results:
        return _uses(request, [(kind, "run_command", {"argv": argv}) for kind, (argv, _) in _REVIEW_CHECKS.items()])
    comments: list[dict[str, Any]] = []
    for kind, (_, message) in _REVIEW_CHECKS.items():
        if (result := results.get(kind)) is None:
            continue
        _, stdout = parse_tool_output(result)
        for raw in stdout.splitlines():
            if match := _GREP_LINE.match(raw):
                comments.append({"file": match["file"], "line": int(match["line"]), "kind": kind, "message": message})
    security = first_user_json(request).get("findings_total")
    verdict = "changes_requested" if comments or (isinstance(security, int) and security > 0) else "approved"
    return final({"summary": {"comments": len(comments), "verdict": verdict}, "comments": comments})


# --- compliance-checker -----------------------------------------------------------------------
_REQUIRED_FILES = {"license": "LICENSE", "readme": "README.md", "gitignore": ".gitignore"}


@script("compliance-checker")
def compliance_checker(request: ChatRequest) -> ModelResponse:
    if (missing := _repo_missing(request)) is not None:
        return missing
    results = _by_key(request)
    if not results:
        return _uses(request, [("listing", "run_command", {"argv": ["ls", "-A", "."]})])
    _, stdout = parse_tool_output(results["listing"])
    present = {name.strip() for name in stdout.splitlines()}
    checks = []
    for key, filename in _REQUIRED_FILES.items():
        found = any(p == filename or p.startswith(filename + ".") or p.upper() == filename.upper() for p in present)
        checks.append(
            {"name": f"{key}-present", "passed": found, "detail": f"{filename} {'found' if found else 'missing'}"}
        )
    secrets = first_user_json(request).get("secrets_found", 0)
    no_secrets = isinstance(secrets, int) and secrets == 0
    checks.append(
        {"name": "no-secrets", "passed": no_secrets, "detail": f"{secrets} finding(s) from the security scan"}
    )
    return final({"passed": all(c["passed"] for c in checks), "checks": checks})


# --- patcher ----------------------------------------------------------------------------------
def _replacement(rule: Rule) -> str:
    """What takes a secret's place. A password becomes an empty string: COO stores what agents
    return scrubbed, and any value after ``password =`` reads as a password to the scrubber, which
    would leave the diff's added line redacted and the diff impossible to apply."""
    if rule.name == "hardcoded-password":
        return ""
    env = {"aws-access-key-id": "AWS_ACCESS_KEY_ID", "anthropic-api-key": "ANTHROPIC_API_KEY"}.get(rule.name, "SECRET")
    return f"<set from environment: {env}>"


PATCH_DIR = ".coo"  # the originals of the files it changed, and the whole diff, in the workspace
_FEEDBACK = "Verification of your work failed"  # how the runner's verification report begins


def patch_script(findings: list[dict[str, Any]]) -> tuple[str, list[str]]:
    """A POSIX shell script that replaces each secret on its line (in the workspace copy), keeps the
    first original of each file it changes under ``.coo/orig/`` and writes the whole change so far,
    as one unified diff, to ``.coo/patch.diff`` (and prints it): run again on a later iteration, it
    adds to the change instead of starting over."""
    edits: dict[str, list[str]] = {}
    for finding in findings:
        rule = RULES_BY_NAME.get(str(finding.get("rule")))
        file, line = finding.get("file"), finding.get("line")
        if rule is None or not rule.secret or not isinstance(file, str) or not isinstance(line, int):
            continue
        if file.startswith("/") or ".." in file.split("/") or file.startswith(f"{PATCH_DIR}/"):
            continue
        if rule.name in ("hardcoded-password", "hardcoded-token"):
            key = rule.pattern.split("[[:space:]]*[=:]")[0]
            value = "[\"'][^\"'<][^\"']*[\"']"  # not a placeholder already put there
            sed = f'{line}s/({key}[[:space:]]*[=:][[:space:]]*){value}/\\1"{_replacement(rule)}"/I'
        else:
            sed = f"{line}s#{rule.pattern}#{_replacement(rule)}#g"
        edits.setdefault(file, []).append(sed)
    lines = ["set -e", f"mkdir -p {PATCH_DIR}/orig"]
    for file, seds in sorted(edits.items()):
        q, orig = shlex.quote(file), shlex.quote(f"{PATCH_DIR}/orig/{file}")
        args = " ".join(f"-e {shlex.quote(s)}" for s in seds)
        lines.append(f'[ -e {orig} ] || {{ mkdir -p "$(dirname {orig})" && cp {q} {orig}; }}')
        lines.append(f"sed -i -E {args} {q}")
    lines.append(f": > {PATCH_DIR}/patch.diff")
    lines.append(f"cd {PATCH_DIR}/orig && files=$(find . -type f | sed 's#^\\./##' | sort) && cd - > /dev/null")
    lines.append(
        'for f in $files; do diff -u --label "a/$f" --label "b/$f" '
        f'"{PATCH_DIR}/orig/$f" "$f" >> {PATCH_DIR}/patch.diff || true; done'
    )
    lines.append(f"cat {PATCH_DIR}/patch.diff")
    return "\n".join(lines) + "\n", sorted(edits)


def iteration_of(request: ChatRequest) -> int:
    """Which run of the attempt this is: 1, plus one per verification report the agent was sent."""
    reports = sum(
        1
        for message in request.messages[1:]
        if message.role == "user"
        for block in message.content
        if isinstance(block, TextBlock) and block.text.startswith(_FEEDBACK)
    )
    return 1 + reports


def _results_of_this_iteration(request: ChatRequest) -> dict[str, ToolResult]:
    """Tool results since the last verification report (a new iteration starts its work again)."""
    since = 0
    for index, message in enumerate(request.messages):
        if message.role == "user" and any(
            isinstance(block, TextBlock) and block.text.startswith(_FEEDBACK) for block in message.content
        ):
            since = index
    later = request.messages[since:]
    results = [block for message in later if message.role == "user" for block in message.content]
    return {r.tool_use_id.split("_", 3)[-1]: r for r in results if isinstance(r, ToolResult)}


@script("patcher")
def patcher(request: ChatRequest) -> ModelResponse:
    """Replaces the secrets the scanner found. Offline it plays a hurried first try: its first
    iteration patches only the high-severity findings, so that the step's secrets check fails and
    the second iteration, told which lines still hold secrets, patches the rest."""
    if (missing := _repo_missing(request)) is not None:
        return missing
    raw = first_user_json(request).get("findings", [])
    findings = [f for f in raw if isinstance(f, dict)] if isinstance(raw, list) else []
    if iteration_of(request) == 1:
        findings = [f for f in findings if f.get("severity") == "high"] or findings
    results = _results_of_this_iteration(request)
    body, files = patch_script(findings)
    if not files:
        return final({"patch": "", "files_changed": 0, "files": [], "replaced": 0})
    if not results:
        return _uses(request, [("patch", "run_command", {"argv": ["sh", "-c", body]})])
    code, stdout = parse_tool_output(results["patch"])
    if code != 0:
        return final({"error": "the patch did not apply", "tool_output": results["patch"].content[:2000]})
    changed = sorted({line[len("+++ b/") :] for line in stdout.splitlines() if line.startswith("+++ b/")})
    replaced = sum(
        1 for f in findings if RULES_BY_NAME.get(str(f.get("rule"))) and RULES_BY_NAME[str(f["rule"])].secret
    )
    return final({"patch": stdout, "files_changed": len(changed), "files": changed, "replaced": replaced})


# --- notifier ---------------------------------------------------------------------------------
def summary_text(data: dict[str, Any]) -> str:
    summary = data.get("summary") if isinstance(data.get("summary"), dict) else {}
    assert isinstance(summary, dict)
    parts = [f"*Repository health* for `{data.get('repo', '?')}`"]
    if summary:
        parts.append(
            f"security findings: {summary.get('total', 0)} "
            f"({summary.get('high', 0)} high, {summary.get('medium', 0)} medium, {summary.get('low', 0)} low)"
        )
    for key, label in (("review_comments", "review comments"), ("patch_files", "files patched")):
        if key in data:
            parts.append(f"{label}: {data[key]}")
    if "compliance_passed" in data:
        parts.append("compliance: " + ("passed" if data["compliance_passed"] else "failed"))
    return "\n".join(parts)


@script("notifier")
def notifier(request: ChatRequest) -> ModelResponse:
    data = first_user_json(request)
    message = str(data["text"]) if isinstance(data.get("text"), str) else summary_text(data)
    results = _by_key(request)
    if not results:
        return _uses(request, [("slack", "post_slack", {"text": message})])
    result = results["slack"]
    output: dict[str, Any] = {"posted": not result.is_error, "message": message}
    if result.is_error:
        output["error"] = result.content
    return final(output)

"""Container health check for the COO image: GET /healthz of the service this container runs.

    python healthcheck.py [orchestrator|worker|sandbox]

Without an argument the service is found from the running ``coo serve <service> [--port N]`` process
(the image's HEALTHCHECK works for all three commands). The port is ``--port`` when given, else
``COO_<SERVICE>_PORT``, else the default. Exit 0 when /healthz answers 200, 1 otherwise, with the
reason on stderr. Standard library only: it runs in the image without extra packages.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

DEFAULT_PORTS = {"orchestrator": 8000, "worker": 8001, "sandbox": 8002}
TIMEOUT_S = 2.5


def serve_command(proc: Path = Path("/proc")) -> tuple[str, int | None] | None:
    """The (service, --port or None) of a ``coo serve`` process in this container, if one runs."""
    for entry in sorted(proc.glob("[0-9]*/cmdline")):
        try:
            argv = [part.decode(errors="replace") for part in entry.read_bytes().split(b"\0") if part]
        except OSError:
            continue
        if "serve" not in argv:
            continue
        rest = argv[argv.index("serve") + 1 :]
        if not rest or rest[0] not in DEFAULT_PORTS:
            continue
        port: int | None = None
        for i, arg in enumerate(rest):
            if arg == "--port" and i + 1 < len(rest) and rest[i + 1].isdigit():
                port = int(rest[i + 1])
            elif arg.startswith("--port=") and arg[len("--port=") :].isdigit():
                port = int(arg[len("--port=") :])
        return rest[0], port
    return None


def port_of(service: str, explicit: int | None = None) -> int:
    if explicit is not None:
        return explicit
    raw = os.environ.get(f"COO_{service.upper()}_PORT", "").strip()
    if not raw:
        return DEFAULT_PORTS[service]
    if not raw.isdigit():
        raise ValueError(f"COO_{service.upper()}_PORT={raw!r} is not a port number")
    return int(raw)


def check(service: str, port: int) -> str | None:
    """None when healthy, else why not."""
    url = f"http://127.0.0.1:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            if response.status == 200:
                return None
            return f"{service}: {url} answered {response.status}"
    except urllib.error.HTTPError as exc:
        return f"{service}: {url} answered {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return f"{service}: {url} unreachable ({exc})"


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        print(f"usage: healthcheck.py [{'|'.join(DEFAULT_PORTS)}]", file=sys.stderr)  # noqa: T201
        return 2
    explicit: int | None = None
    if argv:
        service = argv[0]
        if service not in DEFAULT_PORTS:
            print(f"unknown service {service!r}: expected one of {', '.join(DEFAULT_PORTS)}", file=sys.stderr)  # noqa: T201
            return 2
    else:
        found = serve_command()
        if found is None:
            print("no `coo serve <service>` process in this container", file=sys.stderr)  # noqa: T201
            return 1
        service, explicit = found
    try:
        port = port_of(service, explicit)
    except ValueError as exc:
        print(str(exc), file=sys.stderr)  # noqa: T201
        return 2
    problem = check(service, port)
    if problem is not None:
        print(problem, file=sys.stderr)  # noqa: T201
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

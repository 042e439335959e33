"""A local HTTP server that behaves like a Slack incoming webhook.

It answers like Slack does: 200 ``ok`` for a valid message, 400 ``invalid_payload`` for a body
that is not JSON, 400 ``no_text`` for a message without ``text``, ``blocks`` or ``attachments``,
404 ``no_service`` for another path. ``fail_next(status, times, retry_after=…)`` makes the next
requests answer 429 ``rate_limited`` (with ``Retry-After``) or 5xx, as Slack does when it is
throttling or down. Every accepted message is kept in ``messages``, every request in ``requests``.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class _Failure:
    status: int
    retry_after: float | None


@dataclass
class FakeSlack:
    path: str = "/services/T000/B000/XXXXXXXXXXXXXXXXXXXXXXXX"
    messages: list[dict[str, Any]] = field(default_factory=list)
    requests: list[tuple[int, bytes]] = field(default_factory=list)
    _failures: list[_Failure] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "FakeSlack is not started"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}{self.path}"

    def fail_next(self, status: int, times: int = 1, *, retry_after: float | None = None) -> None:
        with self._lock:
            self._failures.extend(_Failure(status, retry_after) for _ in range(times))

    def texts(self) -> list[str]:
        with self._lock:
            return [str(m.get("text", "")) for m in self.messages]

    def start(self) -> FakeSlack:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:  # keep test output quiet
                return

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, text, headers = fake._answer(self.path, self.headers.get("Content-Type", ""), body)
                with fake._lock:
                    fake.requests.append((status, body))
                payload = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(payload)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, name="fake-slack", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _answer(self, path: str, content_type: str, body: bytes) -> tuple[int, str, dict[str, str]]:
        if path != self.path:
            return 404, "no_service", {}
        with self._lock:
            failure = self._failures.pop(0) if self._failures else None
        if failure is not None:
            headers = {"Retry-After": f"{failure.retry_after:g}"} if failure.retry_after is not None else {}
            return failure.status, "rate_limited" if failure.status == 429 else "internal_error", headers
        if "json" not in content_type:
            return 400, "invalid_payload", {}
        try:
            message = json.loads(body)
        except ValueError:
            return 400, "invalid_payload", {}
        has_content = isinstance(message, dict) and any(message.get(k) for k in ("text", "blocks", "attachments"))
        if not has_content:
            return 400, "no_text", {}
        with self._lock:
            self.messages.append(message)
        return 200, "ok", {}

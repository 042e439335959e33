"""The filtering proxy between a jailed command and the network.

One proxy per command that asked for egress, on a Unix socket bound into its jail (where ``socat``
offers it as ``127.0.0.1:3128``). It speaks the two forms every HTTP client uses through
``HTTP(S)_PROXY``: ``CONNECT host:port`` (TLS and any other TCP protocol) and absolute-URI
requests (``GET http://host/path``). A target is reached only when it matches the step's allow-list
and the sandbox's own ``COO_SANDBOX_EGRESS_ALLOW``; a host *name* that resolves to a loopback,
link-local (cloud metadata), multicast or unspecified address is refused (no rebinding into the
host) — an entry naming such an address literally is what allows it. Everything else gets a 403
that says why, and every decision is logged and counted."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from services.common.egress import EgressRule, allowed
from services.common.logging import get_logger

log = get_logger(__name__)

HEAD_LIMIT = 16 * 1024
HEAD_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 10.0
_HOP_HEADERS = {b"proxy-connection", b"proxy-authorization", b"connection", b"keep-alive"}


@dataclass
class Decision:
    host: str
    port: int
    allowed: bool
    reason: str = ""


@dataclass
class EgressProxy:
    """The proxy of one command: ``step_rules`` (what it asked for) within ``ceiling`` (what the
    sandbox allows)."""

    step_rules: Sequence[EgressRule]
    ceiling: Sequence[EgressRule]
    on_decision: Callable[[Decision], None] | None = None
    _server: asyncio.Server | None = None

    async def start(self, path: Path) -> None:
        self._server = await asyncio.start_unix_server(self._serve, path=str(path), limit=HEAD_LIMIT)
        os.chmod(path, 0o666)  # the jailed command runs as a user of its own

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            try:
                async with asyncio.timeout(2):
                    await self._server.wait_closed()
            except TimeoutError:
                log.warning("sandbox_egress_close_slow", detail="a proxied connection is still open")

    def _decide(self, host: str, port: int) -> Decision:
        if not allowed(self.step_rules, host, port):
            return Decision(host, port, False, f"{host}:{port} is not in this step's egress allow-list")
        if not allowed(self.ceiling, host, port):
            return Decision(
                host, port, False, f"{host}:{port} is not allowed by the sandbox (COO_SANDBOX_EGRESS_ALLOW)"
            )
        return Decision(host, port, True)

    def _record(self, decision: Decision) -> None:
        log.info(
            "sandbox_egress",
            host=decision.host,
            port=decision.port,
            allowed=decision.allowed,
            reason=decision.reason or None,
        )
        if self.on_decision is not None:
            self.on_decision(decision)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(HEAD_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
            await self._handle(head, reader, writer)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            pass
        except Exception:
            log.exception("sandbox_egress_failed")
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _handle(self, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request_line, _, rest = head.partition(b"\r\n")
        parts = request_line.decode("latin-1").split()
        if len(parts) != 3:
            await _reply(writer, 400, "not an HTTP proxy request")
            return
        method, target, version = parts
        if method.upper() == "CONNECT":
            host, _, port_text = target.rpartition(":")
            host = host.strip("[]")
            forward: bytes | None = None
        else:
            url = urlsplit(target)
            if url.scheme != "http" or not url.hostname:
                await _reply(writer, 400, "only absolute http:// URLs and CONNECT go through this proxy")
                return
            host, port_text = url.hostname, str(url.port or 80)
            path = (url.path or "/") + (f"?{url.query}" if url.query else "")
            lines = [f"{method} {path} {version}".encode("latin-1")]
            for line in rest.split(b"\r\n"):
                if line and line.split(b":", 1)[0].strip().lower() not in _HOP_HEADERS:
                    lines.append(line)
            lines.append(b"Connection: close")
            forward = b"\r\n".join(lines) + b"\r\n\r\n"
        if not port_text.isdigit() or not host:
            await _reply(writer, 400, f"bad target {target!r}")
            return
        port = int(port_text)
        decision = self._decide(host, port)
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        if decision.allowed:
            try:
                upstream = await _connect(host, port)
            except _Refused as exc:
                decision = Decision(host, port, False, str(exc))
            except (OSError, TimeoutError) as exc:
                self._record(Decision(host, port, True, f"connect failed: {exc}"))
                await _reply(writer, 502, f"could not reach {host}:{port}: {exc}")
                return
        self._record(decision)
        if upstream is None:
            await _reply(writer, 403, f"egress refused: {decision.reason}")
            return
        up_reader, up_writer = upstream
        try:
            if forward is None:
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                await writer.drain()
            else:
                up_writer.write(forward)
                await up_writer.drain()
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            up_writer.close()


class _Refused(Exception):
    pass


_FORBIDDEN_NETWORKS = (
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
    ipaddress.ip_network("169.254.0.0/16"),
    ipaddress.ip_network("fe80::/10"),
    ipaddress.ip_network("0.0.0.0/8"),
    ipaddress.ip_network("::/128"),
    ipaddress.ip_network("224.0.0.0/4"),
    ipaddress.ip_network("ff00::/8"),
    ipaddress.ip_network("::ffff:127.0.0.0/104"),
)


async def _connect(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    try:
        literal: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(CONNECT_TIMEOUT_S):
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        if literal is None:
            for *_, address in infos:
                ip = ipaddress.ip_address(address[0])
                if any(ip in net for net in _FORBIDDEN_NETWORKS if net.version == ip.version):
                    raise _Refused(f"{host} resolves to {ip}, a loopback, link-local or special address")
        family, _, _, _, address = infos[0]
        return await asyncio.open_connection(address[0], address[1], family=family)


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while chunk := await source.read(65536):
            sink.write(chunk)
            await sink.drain()
        if sink.can_write_eof():
            sink.write_eof()


async def _reply(writer: asyncio.StreamWriter, status: int, message: str) -> None:
    reason = {400: "Bad Request", 403: "Forbidden", 502: "Bad Gateway"}[status]
    body = f"[sandbox] {message}\n".encode()
    writer.write(
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n".encode()
        + body
    )
    with contextlib.suppress(ConnectionError):
        await writer.drain()

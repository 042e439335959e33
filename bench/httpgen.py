"""A closed-loop HTTP load generator (asyncio + httpx), the fallback when ``wrk`` is not installed.

Run as its own process: ``python -m bench.httpgen URL --connections 32 --duration 10 [--header K:V]``.
Prints one JSON object. Only loopback URLs are accepted, and it stops after ``--duration``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from urllib.parse import urlsplit

import httpx

from bench.stats import percentile


async def _run(url: str, headers: dict[str, str], connections: int, duration_s: float) -> dict[str, object]:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    latencies: list[float] = []
    non_2xx = 0
    errors = 0
    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=10.0) as client:
        stop_at = time.monotonic() + duration_s

        async def loop() -> None:
            nonlocal non_2xx, errors
            while time.monotonic() < stop_at:
                t = time.perf_counter()
                try:
                    response = await client.get(url)
                except httpx.HTTPError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - t)
                if not 200 <= response.status_code < 300:
                    non_2xx += 1

        started = time.monotonic()
        await asyncio.gather(*(loop() for _ in range(connections)))
        elapsed = time.monotonic() - started
    latencies.sort()
    return {
        "generator": "httpx (asyncio, one process)",
        "requests": len(latencies),
        "duration_s": round(elapsed, 3),
        "requests_per_s": round(len(latencies) / elapsed, 1) if elapsed > 0 else 0.0,
        "non_2xx": non_2xx,
        "errors": errors,
        "p50_ms": round(percentile(latencies, 50) * 1000, 3) if latencies else None,
        "p99_ms": round(percentile(latencies, 99) * 1000, 3) if latencies else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--header", action="append", default=[])
    args = parser.parse_args()
    if urlsplit(args.url).hostname not in ("127.0.0.1", "localhost", "::1"):
        parser.error("only loopback targets are allowed")
    headers = dict(h.split(":", 1) for h in args.header)
    result = asyncio.run(
        _run(args.url, {k.strip(): v.strip() for k, v in headers.items()}, args.connections, min(args.duration, 120.0))
    )
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()

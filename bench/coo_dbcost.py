"""B6: what one COO step costs Postgres.

* ``pg_stat_database`` deltas (xact_commit, tuples) over the run, minus the harness's own
  transactions and the idle background (the engine's housekeeping tick), divided by steps. Backends
  flush these counters lazily (up to ~10 s after going idle) but always when they exit, so the window
  ends by stopping COO's services (B5 starts them again), and every counter read uses a connection
  of its own that is closed right after.
* Statements: ``pg_stat_statements`` when the server has it loaded; otherwise, on the embedded
  Postgres, the statement log (``log_statement = all`` for the window only), parsed per service
  (``application_name``) and per statement, which also counts COMMITs exactly."""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg

from bench.coo import CooClient, CooStack
from bench.coo_workloads import MissionTable, run_batch
from bench.infra import connect

STAT_COLUMNS = (
    "xact_commit",
    "xact_rollback",
    "tup_returned",
    "tup_fetched",
    "tup_inserted",
    "tup_updated",
    "tup_deleted",
)
LOG_PREFIX = "%m [%p] %a: "
_LOG_LINE = re.compile(r"^\S+ \S+ \S+ \[(\d+)\] (.*?): LOG:  (?:statement|execute [^:]*): (.*)$")
_SPACES = re.compile(r"\s+")


async def _stats(url: str) -> dict[str, int]:
    """The database's counters, read on a connection of its own (its one transaction is counted
    only in later reads, when the connection's exit flushes it)."""
    conn = await connect(url)
    try:
        row = await conn.fetchrow(
            f"SELECT {', '.join(STAT_COLUMNS)} FROM pg_stat_database WHERE datname = current_database()"
        )
    finally:
        await conn.close()
    assert row is not None
    return {c: int(row[c]) for c in STAT_COLUMNS}


async def _pg_stat_statements_calls(conn: asyncpg.Connection) -> int | None:
    """Total calls in pg_stat_statements for this database, or None when it is not usable."""
    loaded = await conn.fetchval("SELECT count(*) FROM pg_extension WHERE extname = 'pg_stat_statements'")
    if not loaded:
        return None
    try:
        value = await conn.fetchval(
            "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements "
            "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
    except asyncpg.PostgresError:
        return None
    return int(value)


async def _set_statement_log(conn: asyncpg.Connection, on: bool) -> None:
    if on:
        await conn.execute("ALTER SYSTEM SET log_statement = 'all'")
        await conn.execute(f"ALTER SYSTEM SET log_line_prefix = '{LOG_PREFIX}'")
    else:
        await conn.execute("ALTER SYSTEM RESET log_statement")
        await conn.execute("ALTER SYSTEM RESET log_line_prefix")
    await conn.execute("SELECT pg_reload_conf()")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _read_slice(path: Path, start: int, end: int) -> list[str]:
    with path.open("rb") as f:
        f.seek(start)
        return f.read(max(0, end - start)).decode(errors="replace").splitlines()


def _shape(sql: str) -> str:
    text = _SPACES.sub(" ", sql).strip().rstrip(";")
    return text[:200]


def _kind(sql: str) -> str:
    words = sql.replace(";", " ").split()
    word = words[0].upper() if words else "?"
    return word if word in ("SELECT", "INSERT", "UPDATE", "DELETE", "BEGIN", "COMMIT", "ROLLBACK") else "OTHER"


def parse_statement_log(lines: list[str], exclude_pids: set[int]) -> list[tuple[str, str]]:
    """(application_name, statement) of every logged statement, continuation lines dropped."""
    out: list[tuple[str, str]] = []
    for line in lines:
        match = _LOG_LINE.match(line)
        if match is None or int(match.group(1)) in exclude_pids:
            continue
        out.append((match.group(2) or "?", match.group(3)))
    return out


def _per_key(statements: list[tuple[str, str]]) -> tuple[Counter[str], Counter[str], Counter[str]]:
    return (
        Counter(app for app, _ in statements),
        Counter(_kind(sql) for _, sql in statements),
        Counter(_shape(sql) for _, sql in statements),
    )


def summarise_statements(
    statements: list[tuple[str, str]],
    background: list[tuple[str, str]],
    *,
    steps: int,
    window_s: float,
    background_s: float,
) -> dict[str, Any]:
    """Statements of the batch window, net of the idle background (its rate times the window)."""
    scale = window_s / background_s if background_s > 0 else 0.0
    mine = _per_key(statements)
    idle = _per_key(background)
    per = max(steps, 1)

    def net(i: int, key: str) -> float:
        return max(0.0, mine[i][key] - idle[i][key] * scale) / per

    by_service = {k: round(net(0, k), 2) for k in sorted(mine[0])}
    by_kind = {k: round(net(1, k), 2) for k in sorted(mine[1])}
    top = sorted(((net(2, sql), sql) for sql in mine[2]), reverse=True)[:15]
    return {
        "source": "embedded Postgres statement log (log_statement = all, for this run only), "
        "net of the idle background",
        "window_s": round(window_s, 2),
        "statements_raw": len(statements),
        "background_statements_subtracted": round(len(background) * scale, 1),
        "statements_per_step": round(sum(by_kind.values()), 2),
        "commits_per_step": by_kind.get("COMMIT", 0.0),
        "rollbacks_per_step": by_kind.get("ROLLBACK", 0.0),
        "by_service_per_step": by_service,
        "by_kind_per_step": by_kind,
        "top_statements": [{"per_step": round(n, 2), "sql": sql} for n, sql in top if n > 0],
        "idle_background_per_s": {
            "statements": round(len(background) / background_s, 2) if background_s > 0 else None,
            "by_service": {k: round(v / background_s, 2) for k, v in sorted(idle[0].items())},
            "by_kind": {k: round(v / background_s, 2) for k, v in sorted(idle[1].items())},
        },
    }


async def measure(
    stack: CooStack,
    client: CooClient,
    workflow: str,
    *,
    missions: int,
    concurrency: int,
    deadline_s: float,
    background_s: float,
) -> dict[str, Any]:
    """Run ``missions`` 1-step missions, then stop COO's services, and report Postgres work per step."""
    url = stack.infra.database_url
    admin = await connect(url)
    log = stack.infra.postgres_log
    notes: list[str] = []
    statement_log = False
    try:
        superuser = bool(await admin.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"))
        pss_before = await _pg_stat_statements_calls(admin)
        if pss_before is None:
            notes.append("pg_stat_statements: not available on this server (not installed/loaded)")
            if log is not None and superuser:
                await _set_statement_log(admin, True)
                statement_log = True
            else:
                notes.append("statements not counted: no pg_stat_statements and the server's log is not ours to read")

        # the idle background (housekeeping tick etc.), measured first
        await asyncio.sleep(1.0)
        bg0, bg_log0, bg_t0 = await _stats(url), _size(log) if log else 0, time.monotonic()
        await asyncio.sleep(background_s)
        bg1, bg_log1, bg_t1 = await _stats(url), _size(log) if log else 0, time.monotonic()
        bg_span = bg_t1 - bg_t0
        bg_rate = {c: (bg1[c] - bg0[c] - (1 if c == "xact_commit" else 0)) / bg_span for c in STAT_COLUMNS}

        table = await MissionTable.open(stack)
        harness_pids = {admin.get_server_pid(), table.conn.get_server_pid()}
        if superuser:
            await table.conn.execute("SET log_statement = 'none'")
        background: list[tuple[str, str]] = []
        if statement_log and log is not None:
            background = parse_statement_log(_read_slice(log, bg_log0, bg_log1), harness_pids)

        s0, log0, t0 = await _stats(url), _size(log) if log else 0, time.monotonic()
        try:
            batch = await run_batch(
                client,
                table,
                workflow,
                count=missions,
                steps_per_mission=1,
                concurrency=concurrency,
                deadline_s=deadline_s,
                unit="missions",
            )
        finally:
            own = table.queries + (1 if superuser else 0) + 1  # its polls, its SET, the first counter read
            await table.close()
        await asyncio.sleep(0.5)  # the statement log is written synchronously
        log_end, t_log_end = _size(log) if log else 0, time.monotonic()
        await asyncio.to_thread(stack.stop)  # backends exit: every pending counter is flushed
        s1, t1 = await _stats(url), time.monotonic()
        pss_after = await _pg_stat_statements_calls(admin) if pss_before is not None else None
        window = t1 - t0
        steps = int(batch["completed"])
        per = max(steps, 1)
        raw = {c: s1[c] - s0[c] for c in STAT_COLUMNS}
        net = {c: raw[c] - bg_rate[c] * window - (own if c == "xact_commit" else 0) for c in STAT_COLUMNS}
        result: dict[str, Any] = {
            "missions": missions,
            "steps": steps,
            "window_s": round(window, 2),
            "batch": batch,
            "pg_stat_database_per_step": {c: round(v / per, 2) for c, v in net.items()},
            "pg_stat_database_raw_delta": raw,
            "harness_transactions_subtracted": own,
            "idle_background_per_s": {c: round(v, 2) for c, v in bg_rate.items()},
            "method": "counters read before the batch and after COO's services were stopped (backend exit "
            "flushes them); minus the idle rate times the window and the harness's own transactions",
        }
        if pss_before is not None and pss_after is not None:
            result["statements"] = {
                "source": "pg_stat_statements (all calls in this database during the window)",
                "statements_per_step": round((pss_after - pss_before) / per, 2),
            }
        elif statement_log and log is not None:
            statements = parse_statement_log(_read_slice(log, log0, log_end), harness_pids)
            result["statements"] = summarise_statements(
                statements, background, steps=steps, window_s=t_log_end - t0, background_s=bg_span
            )
        else:
            result["statements"] = {"source": "not measured", "statements_per_step": None}
        result["notes"] = notes
        return result
    finally:
        if statement_log:
            await _set_statement_log(admin, False)
        await admin.close()

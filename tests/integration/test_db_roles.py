"""Per-service database roles (`coo db roles`): each service runs its real work under its own role,
and is refused what it must not do; no role may change the schema; `coo db upgrade` keeps the
privileges exactly as declared."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import nats
import pytest
from pydantic import SecretStr
from sqlalchemy.engine import make_url

from services.common.db.migrate import upgrade_async
from services.common.db.roles import SERVICES, Service, apply_roles, role_name
from services.common.settings import Settings
from tests.conftest import API_KEY, Infra, RunningApp, db_fetch, plain_dsn, wait_for
from tests.fakes.slack import FakeSlack

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Roles:
    owner: Settings
    prefix: str
    passwords: dict[Service, str]

    def name(self, service: Service) -> str:
        return role_name(self.prefix, service)

    def settings(self, service: Service, **overrides: Any) -> Settings:
        """The owner's settings, connecting as ``service``'s role (its password kept out of the URL)."""
        url = make_url(self.owner.database_url or "").set(username=self.name(service), password=None)
        update = {
            "database_url": url.render_as_string(hide_password=False),
            "database_password": SecretStr(self.passwords[service]),
            **overrides,
        }
        return self.owner.model_copy(update=update)

    async def connect(self, service: Service) -> asyncpg.Connection:
        url = make_url(plain_dsn(self.owner.database_url or "")).set(username=self.name(service), password=None)
        return await asyncpg.connect(
            url.render_as_string(hide_password=False),
            password=self.passwords[service],
            server_settings={"search_path": self.owner.db_schema},
        )


async def drop_roles(database_url: str, names: list[str]) -> None:
    conn = await asyncpg.connect(plain_dsn(database_url))
    try:
        for name in names:
            if await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", name):
                await conn.execute(f'DROP OWNED BY "{name}"')
                await conn.execute(f'DROP ROLE "{name}"')
    finally:
        await conn.close()


@pytest.fixture
async def roles(settings: Settings, infra: Infra) -> AsyncIterator[Roles]:
    """The three service roles, under a prefix of this test's own (roles are cluster-wide)."""
    prefix = f"t{uuid.uuid4().hex[:8]}_"
    owner = settings.model_copy(update={"db_role_prefix": prefix})
    made = Roles(owner, prefix, {service: f"pw-{service}-{uuid.uuid4().hex}" for service in SERVICES})
    try:
        await apply_roles(owner, made.passwords)
        yield made
    finally:
        await drop_roles(infra.database_url, [made.name(s) for s in SERVICES])


async def refused(conn: asyncpg.Connection, statement: str, *args: Any) -> bool:
    """Whether Postgres refuses ``statement`` for lack of privilege (inside a rolled-back transaction)."""
    try:
        async with conn.transaction():
            await conn.execute(statement, *args)
            raise _RolledBack
    except _RolledBack:
        return False
    except asyncpg.InsufficientPrivilegeError:
        return True


class _RolledBack(Exception):
    pass


async def test_no_role_is_privileged_or_may_change_the_schema(roles: Roles) -> None:
    for service in SERVICES:
        conn = await roles.connect(service)
        try:
            attributes = await conn.fetchrow(
                "SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls, rolcanlogin "
                "FROM pg_roles WHERE rolname = current_user"
            )
            assert attributes is not None
            assert dict(attributes) == {
                "rolsuper": False, "rolcreaterole": False, "rolcreatedb": False, "rolreplication": False,
                "rolbypassrls": False, "rolcanlogin": True,
            }  # fmt: skip
            schema = roles.owner.db_schema
            assert await refused(conn, f'CREATE TABLE "{schema}".intruder (id int)'), service
            assert await refused(conn, "CREATE SCHEMA intruder"), service
            for table in ("missions", "sandbox_runs", "api_keys", "alembic_version"):
                assert await refused(conn, f"DROP TABLE {table}"), (service, table)
                assert await refused(conn, f"ALTER TABLE {table} ADD COLUMN intruder int"), (service, table)
                assert await refused(conn, f"TRUNCATE {table}"), (service, table)
                assert await refused(conn, f"CREATE INDEX ON {table} ((1))"), (service, table)
            assert await refused(conn, "UPDATE alembic_version SET version_num = 'x'"), service
        finally:
            await conn.close()


async def test_each_role_is_refused_what_its_service_does_not_need(roles: Roles) -> None:
    sandbox = await roles.connect("sandbox")
    try:
        for table in ("api_keys", "audit_events", "missions", "steps", "agents", "agent_results", "dead_letters"):
            assert await refused(sandbox, f"SELECT 1 FROM {table}"), table
        assert await refused(sandbox, "DELETE FROM sandbox_runs")
        assert await sandbox.fetchval("SELECT count(*) FROM sandbox_runs") == 0  # its own table
    finally:
        await sandbox.close()

    worker = await roles.connect("worker")
    try:
        for table in ("api_keys", "audit_events", "sandbox_runs", "approvals", "alerts", "workflows"):
            assert await refused(worker, f"SELECT 1 FROM {table}"), table
        assert await refused(worker, "UPDATE missions SET status = 'succeeded'")
        assert await refused(worker, "UPDATE steps SET status = 'succeeded'")
        assert await refused(worker, "UPDATE agent_results SET success = true")
        assert await refused(worker, "DELETE FROM agent_results")
        assert await refused(worker, "INSERT INTO agents (name) VALUES ('intruder')")
        assert await worker.fetchval("SELECT count(*) FROM missions") == 0
    finally:
        await worker.close()

    orchestrator = await roles.connect("orchestrator")
    try:
        assert await refused(orchestrator, "SELECT 1 FROM sandbox_runs")
        assert await refused(orchestrator, "DELETE FROM missions")
        assert await refused(orchestrator, "DELETE FROM api_keys")
        assert await refused(orchestrator, "UPDATE agent_results SET success = true")
        assert await orchestrator.fetchval("SELECT count(*) FROM api_keys") == 0
    finally:
        await orchestrator.close()


async def test_each_service_does_its_real_work_under_its_own_role(roles: Roles, tmp_path: Path) -> None:
    """repo-health end to end (scan, review, checks, an approval, the notifier's Slack post), an
    undecodable work item dead-lettered by the worker, an Alertmanager notification, rate limiting and
    audit: every service on its own role."""
    from services.orchestrator.app import create_app as orchestrator_app
    from services.sandbox.app import create_app as sandbox_app
    from services.worker.app import create_app as worker_app

    repos = tmp_path / "repos"
    shutil.copytree(EXAMPLES / "repos" / "sample-app", repos / "sample-app")
    slack = FakeSlack().start()
    common = {
        "sandbox_source_roots": [repos],
        "slack_webhook_url": SecretStr(slack.url),
        "alertmanager_token": SecretStr("am-token-0123456789"),
        "rate_limit_per_minute": 10_000,
    }
    apps = [
        RunningApp(sandbox_app(roles.settings("sandbox", **common)), roles.owner.sandbox_port),
        RunningApp(orchestrator_app(roles.settings("orchestrator", **common)), roles.owner.orchestrator_port),
        RunningApp(worker_app(roles.settings("worker", **common)), roles.owner.worker_port),
    ]
    started: list[RunningApp] = []
    try:
        for app in apps:
            await app.start()
            started.append(app)
        orchestrator = apps[1]
        headers = {"Authorization": f"Bearer {API_KEY}"}
        async with httpx.AsyncClient(base_url=orchestrator.url, headers=headers, timeout=20) as client:
            for app in apps:
                assert (await client.get(f"{app.url}/readyz")).status_code == 200
            created = await client.post(
                "/v1/workflows",
                content=(EXAMPLES / "workflows" / "repo-health.yaml").read_bytes(),
                headers={"Content-Type": "application/yaml"},
            )
            assert created.status_code == 201, created.text
            repo = repos / "sample-app"
            accepted = await client.post("/v1/missions", json={"workflow": "repo-health", "input": {"repo": str(repo)}})
            assert accepted.status_code == 202, accepted.text
            mid = accepted.json()["id"]

            async def patch_waits() -> bool:
                steps = {s["key"]: s for s in (await client.get(f"/v1/missions/{mid}")).json()["steps"]}
                assert all(s["status"] != "failed" for s in steps.values()), steps
                return steps["patch"]["status"] == "awaiting_approval"

            await wait_for(patch_waits, timeout_s=120, what="the patch step to wait for approval")

            def asked() -> bool:
                return any(mid in json.dumps(m) and "coo approve" in json.dumps(m) for m in slack.messages)

            await wait_for(asked, timeout_s=30, what="the approval request on Slack")
            approved = await client.post(f"/v1/missions/{mid}/steps/patch/approve", json={"reason": "ok"})
            assert approved.status_code == 200, approved.text

            async def finished() -> dict[str, Any] | None:
                body = (await client.get(f"/v1/missions/{mid}")).json()
                return body if body["status"] in ("succeeded", "failed", "cancelled") else None

            mission = await wait_for(finished, timeout_s=120, what="the mission to finish")
            assert mission["status"] == "succeeded", mission["error"]
            results = (await client.get(f"/v1/missions/{mid}/steps/notify/results")).json()
            assert any(call["name"] == "post_slack" for call in results[-1]["tool_calls"])

            alert = {
                "version": "4", "status": "firing", "receiver": "coo", "groupKey": "g", "truncatedAlerts": 0,
                "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am",
                "alerts": [{
                    "status": "firing", "labels": {"alertname": "RoleTest", "severity": "warning"},
                    "annotations": {"summary": "roles"}, "startsAt": "2030-01-01T00:00:00Z",
                    "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prom", "fingerprint": "f00d",
                }],
            }  # fmt: skip
            received = await client.post(
                "/webhooks/alertmanager", json=alert, headers={"Authorization": "Bearer am-token-0123456789"}
            )
            assert received.status_code == 200, received.text
            assert received.json()["stored"] == 1
            assert [a["labels"]["alertname"] for a in (await client.get("/v1/alerts")).json()] == ["RoleTest"]

        # The worker parks what it cannot decode.
        nc = await nats.connect(roles.owner.nats_url or "")
        try:
            await nc.jetstream().publish(roles.owner.subject("coo.work.line-counter"), b"not json")
        finally:
            await nc.close()

        async def parked() -> list[Any]:
            return await db_fetch(roles.owner, "SELECT error_type FROM dead_letters WHERE payload = 'not json'")

        await wait_for(parked, timeout_s=30, what="the undecodable work item in dead_letters")

        runs = await db_fetch(roles.owner, "SELECT status FROM sandbox_runs")
        assert runs and {run["status"] for run in runs} <= {"succeeded", "failed"}  # commands ran (some exit non-zero)
        audit = await db_fetch(roles.owner, "SELECT count(*) AS n FROM audit_events")
        assert audit[0]["n"] >= 3  # the workflow, the mission, the approval
        windows = await db_fetch(roles.owner, "SELECT count(*) AS n FROM rate_limit_windows")
        assert windows[0]["n"] >= 1
        assert any("coo approve" not in json.dumps(m) for m in slack.messages), "the notifier's post"
    finally:
        for app in reversed(started):
            await app.stop()
        slack.stop()


async def test_upgrade_keeps_privileges_as_declared(roles: Roles) -> None:
    """A privilege granted by hand is revoked, and a table no declaration names gets none, at the
    next `coo db upgrade` (which a later migration's new table goes through)."""
    owner = await asyncpg.connect(
        plain_dsn(roles.owner.database_url or ""), server_settings={"search_path": roles.owner.db_schema}
    )
    try:
        await owner.execute(f'GRANT DELETE ON missions TO "{roles.name("worker")}"')
        await owner.execute(f'GRANT SELECT ON api_keys TO "{roles.name("sandbox")}"')
        await owner.execute("CREATE TABLE later_table (id int)")
    finally:
        await owner.close()
    await upgrade_async(roles.owner)
    worker, sandbox = await roles.connect("worker"), await roles.connect("sandbox")
    try:
        assert await refused(worker, "DELETE FROM missions")
        assert await refused(sandbox, "SELECT 1 FROM api_keys")
        assert await refused(worker, "SELECT 1 FROM later_table")
        assert await worker.fetchval("SELECT count(*) FROM missions") == 0
    finally:
        await worker.close()
        await sandbox.close()


async def test_the_roles_command_is_idempotent_and_reads_password_files(roles: Roles, tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for service in SERVICES:
        (secrets / f"{service}_db_password").write_text(f"new-{roles.passwords[service]}\n")
    owner = make_url(roles.owner.database_url or "")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("COO_")},
        "COO_DATABASE_URL": owner.set(password=None).render_as_string(hide_password=False),
        "COO_DATABASE_PASSWORD": owner.password or "",
        "COO_NATS_URL": roles.owner.nats_url or "",
        "COO_DB_SCHEMA": roles.owner.db_schema,
        "COO_DB_ROLE_PREFIX": roles.prefix,
        "COO_SECRETS_DIR": str(secrets),
    }
    coo = [sys.executable, "-m", "services.cli.main", "db", "roles"]

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(coo, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)

    first = await asyncio.to_thread(run)
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("privileges already as declared") == 3, first.stdout
    roles.passwords = {service: f"new-{roles.passwords[service]}" for service in SERVICES}
    conn = await roles.connect("sandbox")  # the new password works
    await conn.close()

    (secrets / "worker_db_password").unlink()
    missing = await asyncio.to_thread(run)
    assert missing.returncode == 1
    assert "worker_db_password" in missing.stderr

"""Browser tests of the console: Debian's Chromium driven by Playwright against the real stack (the
three services as processes, Postgres, NATS). They skip, saying why, when Chromium or Playwright is
missing; `scripts/install-system-deps.sh` (run by `make test`) installs Chromium when it can."""

from __future__ import annotations

import contextlib
import re
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from services.common.db.migrate import upgrade_async
from tests.conftest import API_KEY, Infra, delete_streams, drop_schema, make_settings, wait_for
from tests.e2e.processes import Services

if TYPE_CHECKING:
    from playwright.async_api import Browser, ConsoleMessage, Page

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
SCREENSHOTS = ROOT / "build" / "screenshots"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}

# Two line counts in a row, and a step whose agent the offline model cannot answer (it fails at once).
COUNTED = {
    "name": "counted",
    "description": "Counts the lines of its input twice.",
    "steps": [
        {"id": "prepare", "agent": "line-counter", "input": {"text": "{{ input.text }}"}},
        {"id": "report", "agent": "line-counter", "depends_on": ["prepare"], "input": {"text": "{{ input.text }}"}},
    ],
}
BROKEN = {"name": "broken", "steps": [{"id": "call", "agent": "unscripted", "retry": {"max_attempts": 1}}]}


@dataclass
class Console:
    """The running stack, a copy of the sample repository under the sandbox's source roots, and an API client."""

    services: Services
    repo: Path

    @property
    def url(self) -> str:
        return self.services.url("orchestrator")

    def api(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30)

    async def start(self, service: str) -> None:
        self.services.start(service)
        await wait_for(lambda: self.services.ready(service), timeout_s=60, what=f"{service} ready")


@pytest.fixture(scope="module")
def chromium() -> Iterator[Path]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (scripts/install-system-deps.sh does)")
    if not _has_playwright():
        pytest.skip("Playwright for Python is missing: pip install -e '.[dev]'")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    yield CHROMIUM


def _has_playwright() -> bool:
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
async def console(infra: Infra, tmp_path_factory: pytest.TempPathFactory, chromium: Path) -> AsyncIterator[Console]:
    """The services as real processes on a private schema and prefix, shared by this module's tests."""
    base = tmp_path_factory.mktemp("console")
    repos = base / "repos"
    shutil.copytree(EXAMPLES / "repos" / "sample-app", repos / "sample-app")
    settings = make_settings(infra, base / "data")
    await upgrade_async(settings)
    services = Services(settings, base)
    services.env["COO_SANDBOX_SOURCE_ROOTS"] = str(repos)
    running = Console(services, repos / "sample-app")
    try:
        for service in ("sandbox", "orchestrator", "worker"):
            services.start(service)
        for service in ("sandbox", "orchestrator", "worker"):
            await wait_for(lambda s=service: services.ready(s), timeout_s=60, what=f"{service} ready")  # type: ignore[misc]
        async with running.api() as api:
            created = await api.post(
                "/v1/workflows",
                content=(EXAMPLES / "workflows" / "repo-health.yaml").read_bytes(),
                headers={"Content-Type": "application/yaml"},
            )
            assert created.status_code == 201, created.text
            # The offline model answers an agent without a script from its output schema; one that
            # points elsewhere ($ref to another document) it cannot answer, so every run fails.
            unscripted = {
                "model": "offline",
                "description": "The offline model cannot answer it: every run fails.",
                "output_schema": {"$ref": "https://example.invalid/unanswerable.json"},
            }
            assert (await api.put("/v1/agents/unscripted", json=unscripted)).status_code in (200, 201)
            for workflow in (COUNTED, BROKEN):
                assert (await api.post("/v1/workflows", json=workflow)).status_code == 201
        yield running
    finally:
        services.stop_all()
        await drop_schema(infra.database_url, settings.db_schema)
        with contextlib.suppress(Exception):
            await delete_streams(infra.nats_url, settings.bus_prefix)


@pytest.fixture(scope="module")
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(chromium), headless=True)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def page(browser: Browser, console: Console) -> AsyncIterator[Page]:
    """A fresh browser context at desktop size, signed in to the console through its sign-in page."""
    context = await browser.new_context(viewport=DESKTOP, base_url=console.url)
    context.set_default_timeout(15_000)
    opened = await context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))

    def console_error(message: ConsoleMessage) -> None:
        # Requests refused while the orchestrator is down are expected; anything else (a script
        # error, a Content-Security-Policy violation) is a defect.
        if message.type == "error" and "Failed to load resource" not in message.text:
            errors.append(message.text)

    opened.on("console", console_error)
    try:
        await sign_in(opened)
        yield opened
        assert not errors, f"errors in the browser console: {errors}"
    finally:
        await context.close()


async def sign_in(page: Page, key: str = API_KEY) -> None:
    from playwright.async_api import expect

    await page.goto("/console")
    await expect(page).to_have_url(re.compile(r".*/console/sign-in\?next=%2Fconsole$"))
    await page.get_by_label("API key").fill(key)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Missions", level=1)).to_be_visible()


async def no_horizontal_scroll(page: Page) -> bool:
    width: Any = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    return int(width) <= 0


async def screenshot(page: Page, name: str) -> Path:
    path = SCREENSHOTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path

"""The console in a real browser against the real stack: repo-health submitted from the console,
its steps turning green live, a step's results, a pause and a resume, the patch approved, the
mission finishing; a budget pause resumed with added tokens; a dead letter replayed; the
"Reconnecting" banner while the orchestrator is down and its recovery; a workflow written in the
editor (a bad agent shown at its JSON pointer, then saved, edited into a second version and
compared); a mission rerun from its page. Screenshots of the list and detail pages (1280 and 390 px
wide) go to build/screenshots/."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

import pytest

from tests.browser.conftest import DESKTOP, PHONE, Console, no_horizontal_scroll, screenshot
from tests.conftest import wait_for

if TYPE_CHECKING:
    from playwright.async_api import Dialog, Locator, Page

pytestmark = pytest.mark.e2e


def _expect(target: Any) -> Any:
    from playwright.async_api import expect

    return expect(target)


def node(page: Page, key: str) -> Locator:
    """A step of the mission's graph as drawn at this width (the wide or the tall drawing)."""
    return page.locator(f".graph a[data-step='{key}']:visible")


def nav_link(page: Page, name: str) -> Locator:
    return page.get_by_role("navigation", name="Main").get_by_role("link", name=re.compile(f"^{name}"))


def mission_badge(page: Page) -> Locator:
    return page.locator("#mission-head h1 .badge")


async def test_repo_health_submitted_watched_paused_approved_and_finished(page: Page, console: Console) -> None:
    expect = _expect
    async with console.api() as api:  # company for it in the list
        for body in ({"budget_tokens": 1}, {"priority": 5}):
            submitted = await api.post("/v1/missions", json={"workflow": "counted", "input": {"text": "a"}, **body})
            assert submitted.status_code == 202
    await page.get_by_role("link", name="Submit a mission").click()
    await page.get_by_role("link", name="repo-health").click()
    await page.get_by_label("Input (JSON object)").fill(json.dumps({"repo": str(console.repo)}))
    await page.get_by_role("button", name="Submit mission").click()
    await expect(page).to_have_url(re.compile(r".*/console/missions/[0-9a-f-]{36}$"))
    await expect(page.get_by_role("heading", level=1)).to_contain_text("repo-health")
    await page.evaluate("window.__sameDocument = true")  # a reload or navigation would lose it

    # Steps turn green live, with no reload.
    for key in ("scan", "review", "compliance"):
        await expect(node(page, key)).to_have_attribute("data-status", "succeeded", timeout=60_000)
    await expect(node(page, "patch")).to_have_attribute("data-status", "awaiting_approval", timeout=30_000)
    await expect(node(page, "notify")).to_have_attribute("data-status", "pending")
    assert await page.evaluate("window.__sameDocument === true"), "the page reloaded instead of updating live"
    await expect(page.get_by_role("button", name="Approve patch")).to_be_visible()
    await expect(page.locator("#mission-head")).to_contain_text("3/6")
    assert "scan succeeded" in (await page.locator(".graph--wide title").first.text_content() or "")
    await screenshot(page, "mission-detail-1280")
    await page.set_viewport_size(PHONE)
    await expect(node(page, "scan")).to_be_visible()  # the tall drawing at phone width
    assert await no_horizontal_scroll(page), "the mission page scrolls sideways at 390 px"
    await screenshot(page, "mission-detail-390")
    await page.set_viewport_size(DESKTOP)

    # A step's full results.
    await node(page, "scan").click()
    await expect(page.get_by_role("heading", name=re.compile(r"^Step scan"))).to_be_visible()
    attempt = page.locator("#attempt-1")
    await expect(attempt.get_by_role("heading", name=re.compile("Attempt 1"))).to_be_visible()
    for label in ("Model", "Duration", "Tokens in / out", "Cost", "Error type"):
        await expect(attempt.locator("dt", has_text=label)).to_be_visible()
    await expect(attempt).to_contain_text("offline")
    await expect(attempt.get_by_role("heading", name="Verification report")).to_be_visible()
    call = attempt.locator("details.call").first
    await call.locator("summary").click()
    await expect(call).to_contain_text("run_command")
    await expect(call.locator("pre").first).to_be_visible()
    await screenshot(page, "step-results-1280")
    await page.get_by_role("link", name="← Back to the mission").click()

    # Pause, an approval refused while paused (the error is shown), resume.
    await page.get_by_label("Pause reason").fill("checking the patch first")
    await page.get_by_role("button", name="Pause mission").click()
    await expect(page.locator("#flash")).to_contain_text("Mission paused.")
    await expect(mission_badge(page)).to_have_attribute("data-status", "paused")
    await page.get_by_role("button", name="Approve patch").click()
    await expect(page.get_by_role("alert")).to_contain_text("resume it before approving")
    await page.get_by_role("button", name="Resume mission").click()
    await expect(page.locator("#flash")).to_contain_text("Mission resumed.")
    await expect(mission_badge(page)).to_have_attribute("data-status", "running")

    # Approve the patch, watch the mission finish.
    await page.get_by_label("Reason").first.fill("remove the planted keys")
    await page.get_by_role("button", name="Approve patch").click()
    await expect(page.locator("#flash")).to_contain_text("Step 'patch' approved")
    await expect(node(page, "notify")).to_have_attribute("data-status", "succeeded", timeout=60_000)
    await expect(mission_badge(page)).to_have_attribute("data-status", "succeeded")
    await expect(page.locator("#mission-head")).to_contain_text("6/6")
    await expect(page.locator(".timeline")).to_contain_text("mission.succeeded")
    await expect(page.get_by_role("button", name="Pause mission")).to_have_count(0)
    trace = page.get_by_role("link", name=re.compile("Trace in Tempo"))
    assert "/explore?" in (await trace.get_attribute("href") or "")
    await screenshot(page, "mission-finished-1280")

    # The list: the mission with its progress; a filter; both widths.
    await nav_link(page, "Missions").click()
    row = page.locator("tr", has=page.get_by_role("link", name="repo-health"))
    await expect(row.first).to_contain_text("6/6 steps")
    await expect(page.locator("tr", has_text="budget exceeded").first).to_be_visible()
    await screenshot(page, "missions-1280")
    await page.set_viewport_size(PHONE)
    assert await no_horizontal_scroll(page), "the missions page scrolls sideways at 390 px"
    await screenshot(page, "missions-390")
    await page.set_viewport_size(DESKTOP)
    await page.get_by_label("Status").select_option("succeeded")
    await page.get_by_label("Workflow").select_option("repo-health")
    await page.get_by_role("button", name="Apply filters").click()
    await expect(page).to_have_url(re.compile(r"status=succeeded&workflow=repo-health"))
    await expect(page.locator("tbody tr")).to_have_count(1)
    await expect(row).to_be_visible()


async def test_a_budget_pause_is_resumed_with_added_tokens(page: Page, console: Console) -> None:
    expect = _expect
    async with console.api() as api:
        body = {"workflow": "counted", "input": {"text": "a\nb\n"}, "budget_tokens": 1}
        mission_id = (await api.post("/v1/missions", json=body)).json()["id"]
    await page.goto(f"/console/missions/{mission_id}")
    await expect(mission_badge(page)).to_have_attribute("data-status", "paused", timeout=30_000)
    await expect(page.locator("#mission-head")).to_contain_text("budget exceeded")

    await page.get_by_label("Add budget (tokens)").fill("1")
    await page.get_by_role("button", name="Resume mission").click()
    await expect(page.get_by_role("alert")).to_contain_text("still over budget")
    await expect(mission_badge(page)).to_have_attribute("data-status", "paused")

    await page.get_by_label("Add budget (tokens)").fill("100000")
    await page.get_by_role("button", name="Resume mission").click()
    await expect(page.locator("#flash")).to_contain_text("Mission resumed.")
    await expect(mission_badge(page)).to_have_attribute("data-status", "succeeded", timeout=30_000)
    await expect(page.locator("#mission-head")).to_contain_text("100,001 budget")


async def test_a_dead_letter_is_replayed_after_a_confirmation(page: Page, console: Console) -> None:
    expect = _expect
    async with console.api() as api:
        mission_id = (await api.post("/v1/missions", json={"workflow": "broken"})).json()["id"]

        async def dead_letters() -> list[dict[str, Any]]:
            found = await api.get("/v1/dlq", params={"mission_id": mission_id})
            items: list[dict[str, Any]] = found.json()["items"]
            return items

        letter = (await wait_for(dead_letters, timeout_s=30, what="the dead letter"))[0]

    await nav_link(page, "Dead letters").click()
    row = page.locator(f"tr[data-letter='{letter['id']}']")
    await expect(row).to_contain_text("AGENT_CRASH")
    questions: list[str] = []

    async def accept(dialog: Dialog) -> None:
        questions.append(dialog.message)
        await dialog.accept()

    page.once("dialog", accept)
    await row.get_by_role("button", name=re.compile("Replay")).click()
    await expect(page.locator("#flash")).to_contain_text("runs again (attempt 2)")
    assert questions and "new attempt" in questions[0]
    await expect(row.locator(".badge")).to_have_attribute("data-status", "replayed")
    # The new attempt fails too; its dead letter appears live, linked to the one replayed.
    await expect(page.locator("tr[data-letter]", has_text="again after replaying")).to_have_count(1, timeout=30_000)
    await screenshot(page, "dead-letters-1280")


async def test_reconnecting_banner_while_the_orchestrator_is_down(page: Page, console: Console) -> None:
    expect = _expect
    banner = page.get_by_role("status").filter(has_text="Reconnecting")
    heading = page.get_by_role("heading", name="Missions", level=1)
    await expect(page.locator("#missions-live")).not_to_be_empty()
    await expect(banner).to_have_count(0)

    console.services.kill("orchestrator")
    try:
        await expect(banner).to_be_visible(timeout=10_000)
        await expect(heading).to_be_visible()  # the last content stays on screen
        await expect(page.locator("#missions-live")).not_to_be_empty()
        await screenshot(page, "missions-reconnecting-1280")
    finally:
        await console.start("orchestrator")
    await expect(banner).to_have_count(0, timeout=20_000)
    await expect(page.locator("#connection")).to_be_empty()
    await expect(page.locator("#missions-live")).not_to_be_empty()


async def test_keyboard_labels_and_focus(page: Page, console: Console) -> None:
    expect = _expect
    for path in (
        "/console",
        "/console/workflows/repo-health",
        "/console/dlq",
        "/console/agents",
        "/console/alerts",
        "/console/schedules",
        "/console/triggers",
        "/console/workflows/new",
        "/console/workflows/repo-health/edit",
        "/console/workflows/repo-health/diff?from=1&to=1",
        "/console/agents/new",
        "/console/agents/echo/edit",
    ):
        await page.goto(path)
        unlabelled = await page.evaluate(
            """[...document.querySelectorAll('input:not([type=hidden]), select, textarea, button')]
                 .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                               && !el.textContent.trim())
                 .map(el => el.outerHTML)"""
        )
        assert unlabelled == [], f"controls without a label on {path}: {unlabelled}"
        for width in (390, 768, 1024, 1280):
            await page.set_viewport_size({"width": width, "height": 900})
            assert await no_horizontal_scroll(page), f"{path} scrolls sideways at {width} px"
        if path == "/console/workflows/repo-health":
            await screenshot(page, "workflow-1280")
    await page.goto("/console")
    await page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to content")
    await expect(skip).to_be_focused()
    outline = await skip.evaluate("el => getComputedStyle(el).outlineStyle")
    assert outline != "none", "focus is not visible"
    await page.keyboard.press("Tab")
    await page.keyboard.press("Tab")
    await expect(nav_link(page, "Missions")).to_be_focused()
    await page.keyboard.press("Tab")
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", name="Workflows", level=1)).to_be_visible()


EDITED = """\
name: edited
description: Written in the console.
steps:
  - id: count
    agent: no-such-agent
    input:
      text: "{{ input.text }}"
"""


async def test_a_workflow_is_written_refused_saved_and_compared_in_the_editor(page: Page, console: Console) -> None:
    expect = _expect
    await nav_link(page, "Workflows").click()
    await page.get_by_role("link", name="New workflow").click()
    await expect(page.get_by_role("heading", name="New workflow", level=1)).to_be_visible()
    editor = page.get_by_label("Definition (YAML)")
    await editor.fill(EDITED)
    await page.get_by_role("button", name="Create workflow").click()

    # The unknown agent is shown at its JSON pointer beside the editor, which keeps the text.
    problems = page.get_by_role("alert")
    await expect(problems).to_contain_text("/steps/0/agent")
    await expect(problems).to_contain_text("no-such-agent")
    await expect(editor).to_have_value(EDITED)
    await expect(editor).to_have_attribute("aria-invalid", "true")
    await problems.get_by_role("button", name=re.compile("Go to line 5")).click()
    await expect(editor).to_be_focused()
    selected = await editor.evaluate("el => el.value.slice(el.selectionStart, el.selectionEnd)")
    assert selected.strip() == "agent: no-such-agent", selected
    await screenshot(page, "workflow-editor-error-1280")
    await page.set_viewport_size(PHONE)
    assert await no_horizontal_scroll(page), "the editor scrolls sideways at 390 px"
    await page.set_viewport_size(DESKTOP)

    await editor.fill(EDITED.replace("no-such-agent", "line-counter"))
    await page.get_by_role("button", name="Create workflow").click()
    await expect(page).to_have_url(re.compile(r"/console/workflows/edited\?version=1&saved=1$"))
    await expect(page.get_by_role("status").filter(has_text="Saved as version 1.")).to_be_visible()

    # Edited into a second version, which the workflow page then shows, and compared with the first.
    await page.get_by_role("link", name="Edit edited").click()
    await expect(editor).to_have_value(re.compile(r"agent: line-counter"))
    text = await editor.input_value()
    await editor.fill(text.replace("Written in the console.", "Counts lines, edited twice."))
    await page.get_by_role("button", name="Save as a new version").click()
    await expect(page).to_have_url(re.compile(r"/console/workflows/edited\?version=2&saved=1$"))
    await expect(page.get_by_role("heading", level=1)).to_contain_text("v2")
    await expect(page.get_by_text("Counts lines, edited twice.").first).to_be_visible()
    await page.get_by_role("link", name="Changes from v1").click()
    await expect(page.get_by_role("heading", level=1)).to_contain_text("v1 → v2")
    await expect(page.locator(".diff__line--remove")).to_contain_text(["description: Written in the console."])
    await expect(page.locator(".diff__line--add")).to_contain_text(["description: Counts lines, edited twice."])
    await screenshot(page, "workflow-diff-1280")
    async with console.api() as api:
        latest = (await api.get("/v1/workflows/edited")).json()
        assert (latest["version"], latest["definition"]["description"]) == (2, "Counts lines, edited twice.")


async def test_a_mission_is_rerun_from_its_page(page: Page, console: Console) -> None:
    expect = _expect
    async with console.api() as api:
        body = {"workflow": "counted", "input": {"text": "a\nb\n"}}
        original = (await api.post("/v1/missions", json=body)).json()["id"]
    await page.goto(f"/console/missions/{original}")
    await expect(mission_badge(page)).to_have_attribute("data-status", "succeeded", timeout=30_000)
    await expect(page.locator("#rerun-of")).to_have_count(0)
    questions: list[str] = []

    async def accept(dialog: Dialog) -> None:
        questions.append(dialog.message)
        await dialog.accept()

    page.once("dialog", accept)
    await page.get_by_role("button", name="Rerun mission…").click()
    await expect(page).not_to_have_url(re.compile(original))
    await expect(page).to_have_url(re.compile(r".*/console/missions/[0-9a-f-]{36}$"))
    assert questions and "Run this mission again?" in questions[0]
    back = page.locator("#rerun-of").get_by_role("link")
    await expect(back).to_have_attribute("href", f"/console/missions/{original}")
    await expect(mission_badge(page)).to_have_attribute("data-status", "succeeded", timeout=30_000)
    await back.click()
    await expect(page).to_have_url(re.compile(f"/console/missions/{original}$"))

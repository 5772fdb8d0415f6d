"""Fleet pages in a browser: the demo's agent in the tops and the table, its detail page, auto-refresh, and
start/stop capture: absent for a viewer (and refused by the API), confirmed before anything is sent for an
operator. The capture requests of the operator's test are answered in the browser, so the shared server's
agent keeps its state."""

from __future__ import annotations

import json
import urllib.error
from typing import Any

import pytest
from console_pages import log_in

Console = Any  # tests/console/conftest.py's Console (a fixture's value; conftest modules are not imported)




def demo_agent(console: Console) -> dict[str, Any]:
    agents = console.call("GET", "/api/v1/agents")
    assert agents, "the demo registered no agent"
    return agents[0]  # type: ignore[no-any-return]


def status_of(console: Console, method: str, path: str, token: str) -> int:
    try:
        console.call(method, path, token=token)
    except urllib.error.HTTPError as exc:
        return exc.code
    return 200


def test_the_fleet_shows_the_demo_agent_and_its_page(admin_page: Any, console: Console, shot: Any) -> None:
    page = admin_page
    agent = demo_agent(console)
    page.goto(console.link("/fleet"))
    row = page.locator(f'[data-test="agents-table"] tr[data-agent="{agent["name"]}"]')
    row.wait_for()
    assert agent["host"] in row.inner_text()
    for title in ("CPU", "Memory", "Captured", "Shipped", "Forwarded", "Drops"):
        page.locator(f'[data-test="top-{title}"] canvas').first.wait_for()
    assert "1 agents" in page.locator('[data-test="fleet-summary"]').inner_text().replace("\n", " ")
    page.locator('[data-test="hosts-table"]').get_by_text(agent["host"], exact=True).wait_for()
    # the window is in the link; pausing stops the refresh
    page.locator('[data-test="fleet-window"]').select_option("1h")
    page.wait_for_url("**window=1h**")
    page.locator('[data-test="refresh-toggle"]').click()
    page.get_by_text("Auto-refresh paused").wait_for()
    page.locator('[data-test="refresh-toggle"]').click()
    shot(page, "fleet")

    row.get_by_role("link", name=agent["name"]).click()
    page.wait_for_url(f"**/#/fleet/{agent['name']}**")
    assert page.locator('[data-test="agent-name"]').inner_text() == agent["name"]
    assert agent["id"] in page.locator('[data-test="agent-identity"]').inner_text()
    page.locator('[data-test="agent-interfaces"] table').wait_for()
    assert "v" in page.locator('[data-test="config-version"]').inner_text()
    page.locator('[data-test="agent-breakers"]').get_by_text("Breaker", exact=True).wait_for()
    shot(page, "agent")


def test_an_unknown_agent_is_said_in_words(admin_page: Any, console: Console, console_errors: list[str]) -> None:
    admin_page.goto(console.link("/fleet/no-such-agent"))
    alert = admin_page.get_by_role("alert")
    alert.wait_for()
    assert "no agent with id, name or host name 'no-such-agent'" in alert.inner_text()
    console_errors[:] = [e for e in console_errors if "404" not in e]  # the expected answer


@pytest.fixture
def viewer(console: Console) -> tuple[str, str]:
    return console.make_user("viewer")


def test_a_viewer_sees_no_capture_buttons_and_the_api_refuses_them(
    page: Any, console: Console, console_errors: list[str], viewer: tuple[str, str]
) -> None:
    agent = demo_agent(console)
    log_in(page, console, *viewer, path="/fleet")
    page.locator(f'tr[data-agent="{agent["name"]}"]').wait_for()
    page.locator('[data-test="groups-panel"] tr[data-group]').first.wait_for()
    assert page.locator('[data-test="capture-start"], [data-test="capture-stop"]').count() == 0
    page.goto(console.link(f"/fleet/{agent['name']}"))
    page.locator('[data-test="agent-name"]').wait_for()
    assert page.locator('[data-test="capture-start"], [data-test="capture-stop"], [data-test="move-group"]').count() == 0
    token = console.token_for(*viewer)
    for path in (f"/api/v1/agents/{agent['id']}/capture/stop", f"/api/v1/agents/{agent['id']}/capture/start",
                 f"/api/v1/groups/{agent['group']}/capture/stop"):  # fmt: skip
        assert status_of(console, "POST", path, token) == 403, path


def test_an_operator_confirms_before_capture_is_stopped(page: Any, console: Console, console_errors: list[str]) -> None:
    agent = demo_agent(console)
    sent: list[str] = []

    def answer(route: Any) -> None:  # the shared server's agent is left alone
        sent.append(route.request.url)
        route.fulfill(status=200, content_type="application/json",
                      body=json.dumps({"command": 999999, "agent_id": agent["id"], "action": "stop"}))  # fmt: skip

    page.route("**/api/v1/agents/*/capture/*", answer)
    page.route("**/api/v1/commands/999999", lambda route: route.fulfill(
        status=200, content_type="application/json",
        body=json.dumps({"id": 999999, "agent_id": agent["id"], "action": "stop", "issued_at": 1, "delivered_at": 1,
                         "done_at": 2, "ok": True, "detail": "capture stopped"})))  # fmt: skip
    log_in(page, console, *console.make_user("operator"), path="/fleet")
    row = page.locator(f'tr[data-agent="{agent["name"]}"]')
    row.locator('[data-test="capture-stop"]').click()
    dialog = page.locator('[data-test="confirm-dialog"]')
    dialog.wait_for()
    assert agent["name"] in dialog.inner_text() and not sent
    page.locator('[data-test="confirm-cancel"]').click()
    dialog.wait_for(state="detached")
    assert not sent
    row.locator('[data-test="capture-stop"]').click()
    page.locator('[data-test="confirm-ok"]').click()
    dialog.wait_for(state="detached")
    row.locator('[data-test="capture-outcome"]').get_by_text("done").wait_for()
    assert len(sent) == 1 and sent[0].endswith(f"/api/v1/agents/{agent['id']}/capture/stop")

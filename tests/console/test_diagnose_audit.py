""""Why no data?" and the audit log in a browser: the chain of a VM with its first broken link highlighted,
and the demo's PCAP pull in the audit log for an admin, newest first, filtered by action and user; viewers
have no audit page."""

from __future__ import annotations

import urllib.error
from typing import Any

import pytest
from console_pages import log_in

Console = Any  # tests/console/conftest.py's Console




def test_diagnose_shows_the_chain_and_its_first_broken_link(admin_page: Any, console: Console, shot: Any) -> None:
    page = admin_page
    expected = console.call("GET", "/api/v1/diagnose/vm/db-01")
    page.goto(console.link("/diagnose"))
    page.locator('[data-test="vm-input"]').fill("db-0")
    page.locator("#diagnose-vms option").first.wait_for(state="attached")  # suggestions from the inventory
    assert any("db-0" in v for v in page.locator("#diagnose-vms option").evaluate_all("els => els.map(e => e.value)"))
    page.locator('[data-test="vm-input"]').fill("db-01")
    page.locator('[data-test="diagnose"]').click()
    page.wait_for_url("**vm=db-01**")
    chain = page.locator('[data-test="chain"]')
    chain.wait_for()
    statuses = [(li.get_attribute("data-step"), li.get_attribute("data-status")) for li in chain.locator("li").all()]
    assert statuses[: len(expected["steps"])] == [(s["step"], s["status"]) for s in expected["steps"]]
    verdict = page.locator('[data-test="verdict"]').inner_text()
    if expected["ok"]:
        assert "Every link works" in verdict
    else:
        first = chain.locator("li.first")
        assert first.count() == 1 and first.get_attribute("data-step") == expected["broken"]
        assert expected["summary"] in first.inner_text() and "What to do" in first.inner_text()
        assert expected["summary"] in verdict
        assert all(s == "unchecked" for _, s in statuses[len(expected["steps"]):])  # the links after it
    shot(page, "diagnose")


def test_an_unknown_vm_breaks_at_the_inventory(admin_page: Any, console: Console) -> None:
    admin_page.goto(console.link("/diagnose", vm="no-such-vm"))
    first = admin_page.locator('[data-test="chain"] li.first')
    first.wait_for()
    assert first.get_attribute("data-step") == "inventory" and "'no-such-vm' is not in the inventory" in first.inner_text()


def test_the_audit_log_shows_the_demos_packet_pull_newest_first(admin_page: Any, console: Console, shot: Any) -> None:
    page = admin_page
    pulls = console.call("GET", "/api/v1/audit?action=pcap.retrieve")
    assert pulls, "the demo's walk pulled packets"
    page.goto(console.link("/audit"))
    table = page.locator('[data-test="audit-table"]')
    table.locator('tr[data-action="pcap.retrieve"]').first.wait_for()
    times = table.locator("tbody tr[data-action] td:first-child").all_inner_texts()
    assert times == sorted(times, reverse=True) and len(times) > 1
    page.locator('[data-test="audit-action"]').select_option("pcap.")
    page.wait_for_url("**action=pcap.**")
    page.wait_for_function("() => [...document.querySelectorAll('tr[data-action]')].every(r => r.dataset.action.startsWith('pcap.'))")
    row = table.locator('tr[data-action="pcap.retrieve"]').last
    text = row.inner_text()
    assert pulls[0]["actor"] in text and f'filter "{pulls[0]["filter"]}"' in text and "packets" in text
    row.click()
    assert '"bytes"' in page.locator("tr.details").inner_text()
    page.locator('[data-test="audit-actor"]').fill("nobody-at-all")
    page.locator('[data-test="audit-actor"]').press("Enter")
    page.locator('[data-test="audit-empty"]').wait_for()
    page.locator('[data-test="audit-actor"]').fill(pulls[0]["actor"])
    page.locator('[data-test="audit-actor"]').press("Enter")
    table.locator('tr[data-action="pcap.retrieve"]').first.wait_for()
    shot(page, "audit")


def test_a_viewer_has_no_audit_page(page: Any, console: Console, console_errors: list[str]) -> None:
    user, password = console.make_user("viewer")
    log_in(page, console, user, password, "/fleet")
    nav = page.get_by_role("navigation", name="Pages")
    nav.get_by_role("link", name="Fleet").wait_for()
    assert nav.get_by_role("link", name="Audit").count() == 0
    page.goto(console.link("/audit"))
    page.wait_for_url("**/#/panorama**")  # the router sends it away
    with pytest.raises(urllib.error.HTTPError) as refused:
        console.call("GET", "/api/v1/audit", token=console.token_for(user, password))
    assert refused.value.code == 403

"""The Findings page in a browser: the seed case's hourly backup is listed (periodic transfer, and its push as a
burst), a row opens its evidence and a link into the incident workflow; an operator acknowledges with a reason,
viewers see the list without the buttons."""

from __future__ import annotations

from typing import Any

from console_pages import log_in

Console = Any  # tests/console/conftest.py's Console


def _run_engine(console: Console) -> None:
    """The engine over the seed case (the server's own loop would get there within minutes; no waiting here)."""
    console.call(
        "POST", "/api/v1/findings/run", {"time_from": console.scenario_start, "time_to": console.scenario_end}
    )


def test_the_seed_cases_backup_is_a_finding(admin_page: Any, console: Console, shot: Any) -> None:
    _run_engine(console)
    listed = console.call("GET", "/api/v1/findings?kind=periodic_transfer")["findings"]
    assert any(f["subject"]["server_port"] == 873 for f in listed)
    page = admin_page
    page.goto(console.link("/findings"))
    table = page.locator('[data-test="findings-table"]')
    table.locator('tr[data-kind="periodic_transfer"]').first.wait_for()
    assert table.locator('tr[data-kind="burst"]').count() >= 1
    page.locator('[data-test="findings-kind"]').select_option("periodic_transfer")
    page.wait_for_url("**kind=periodic_transfer**")
    page.wait_for_function(
        "() => [...document.querySelectorAll('tr[data-kind]')].every(r => r.dataset.kind === 'periodic_transfer')"
    )
    row = table.locator('tr[data-kind="periodic_transfer"]').first
    assert "every 60 min" in row.inner_text()
    row.click()
    details = page.locator('[data-test="finding-details"]')
    assert "cloudtap backtest" in details.locator('[data-test="finding-reproduce"]').inner_text()
    assert "next_expected" in details.inner_text()
    assert "/incident" in (details.locator('[data-test="finding-incident"]').get_attribute("href") or "")
    page.locator('[data-test="finding-reason"]').fill("the nightly backup, expected")
    page.locator('[data-test="finding-ack"]').click()
    page.locator('[data-test="finding-actions"]').wait_for()
    assert "the nightly backup, expected" in page.locator('[data-test="finding-actions"]').inner_text()
    assert row.locator('[data-test="finding-state"]').inner_text() == "acknowledged"
    shot(page, "findings")


def test_a_viewer_reads_findings_without_acting(
    page: Any, console: Console, console_errors: list[str]
) -> None:
    _run_engine(console)
    user, password = console.make_user("viewer")
    log_in(page, console, user, password, "/findings")
    page.locator('[data-test="findings-table"] tr[data-kind]').first.wait_for()
    page.locator('[data-test="findings-table"] tr[data-kind]').first.click()
    page.locator('[data-test="finding-details"]').wait_for()
    assert page.locator('[data-test="finding-ack"]').count() == 0

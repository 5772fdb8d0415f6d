"""Application request metrics in the browser: the incident workflow ranks, drills and charts by request latency,
and the panorama colours service edges by request p99 or error rate.

The server is the console tests' seed case plus the requests of ``console_requests`` (web-02 -> app-04:9443,
whose ``POST /api/report`` answers in ~400 ms in the incident window instead of ~3 ms). Every number the page
shows is checked against the API's answer to the same question.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from console_requests import CLIENT, PORT, SERVER, WINDOW, plant_requests
from playwright.sync_api import expect

pytestmark = pytest.mark.slow

EDGE = {"client": CLIENT, "server": SERVER, "port": str(PORT)}
#: The seed case's backup push: plenty of traffic, no parsed requests.
PUSH = {"client": "10.10.1.46", "server": "10.10.5.20", "port": "873"}
NO_REQUESTS = "no application requests parsed for this edge (enable payload capture on its policy)"


@pytest.fixture(scope="module")
def planted(console: Any) -> dict[str, Any]:
    """The planted requests' drill-down of the slow edge over the incident window (the API's answer)."""
    drill = plant_requests(console)
    assert drill["slowest"], "the planted requests did not reach the drill-down"
    return drill


def _number(text: str) -> tuple[float, int]:
    """("1,049 ms" | "861" | "3.99 ms") -> (value, decimals shown)."""
    found = re.search(r"[\d,]+(?:\.(\d+))?", text)
    assert found, text
    return float(found.group(0).replace(",", "")), len(found.group(1) or "")


def _shows(text: str, value: float) -> None:
    """``text`` shows ``value`` rounded to the decimals it prints."""
    shown, decimals = _number(text)
    assert abs(shown - value) <= 0.5 * 10**-decimals + 1e-9, (text, value)


def test_incident_compares_and_drills_by_request_latency(
    admin_page: Any, console: Any, planted: Any, shot: Any
) -> None:
    page = admin_page
    page.goto(console.link("/incident", **WINDOW, **EDGE, metric="latency_p99", step="compare"))
    # the compare ranks by p99 (ms): the page sends the same question as this one
    answer = console.call("POST", "/api/v1/analysis/compare", {
        "time_from": WINDOW["wfrom"], "time_to": WINDOW["wto"], "baseline": "before", "level": "ip", "limit": 20,
        "bursts": 5, "metric": "latency_p99"})  # fmt: skip
    ours = next(e for e in answer["edges"] if e["target"] == SERVER and e["server_port"] == PORT)
    assert ours["value"] > 10 * ours["expected"] > 0  # the report got slow: hundreds of ms against a few
    row = page.locator("[data-test=compare-edges] tbody tr", has_text=f"app-04 ({SERVER}):{PORT}")
    expect(row).to_have_class("clickable selected", timeout=30_000)
    expect(row).to_contain_text("/http")
    _shows(row.locator("[data-test=change-value]").inner_text(), ours["value"])
    expect(page.locator("select[name=metric]")).to_have_value("latency_p99")
    expect(page.get_by_text("by latency p99 (ms)")).to_be_visible()
    shot(page, "incident-requests-compare")

    # drill into the edge itself: its slowest requests and error codes, as the API lists them
    page.get_by_role("button", name="Drill down →").click()
    page.get_by_label("the edge only").check()
    page.wait_for_function("() => location.hash.includes('subject=edge')")
    rows = page.locator("[data-test=slowest] tbody tr")
    expect(rows).to_have_count(len(planted["slowest"]), timeout=30_000)
    for i, s in enumerate(planted["slowest"]):
        cells = rows.nth(i).locator("td")
        expect(cells.nth(0)).to_have_text(s["resource"])
        expect(cells.nth(1)).to_have_text(s["request_type"])
        expect(cells.nth(3)).to_have_text(f"{s['stats']['requests']:,}")
        _shows(cells.nth(5).inner_text(), s["stats"]["latency_p99_ms"])
        _shows(cells.nth(6).inner_text(), s["stats"]["latency_max_ms"])
    assert planted["slowest"][0]["resource"] == "/api/report"  # the slow one first
    codes = page.locator("[data-test=error-codes] tbody tr")
    expect(codes).to_have_count(len(planted["error_codes"]))
    for i, e in enumerate(planted["error_codes"]):
        expect(codes.nth(i)).to_contain_text(e["status"])
        expect(codes.nth(i).locator("td").nth(4)).to_have_text(f"{e['count']:,}")
    assert {e["code"] for e in planted["error_codes"]} >= {404, 500}
    p99 = planted["requests"][0]["stats"]["latency_p99_ms"]
    _shows(page.locator("[data-test=drill-requests] li").first.locator("strong").nth(1).inner_text(), p99)
    shot(page, "incident-requests-drill")

    # the backup push carries no parsed requests: the drill-down says so
    empty = console.call("POST", "/api/v1/analysis/drill", {
        "time_from": WINDOW["wfrom"], "time_to": WINDOW["wto"], "limit": 8, "metric": "latency_p99",
        "target": {"client_ip": PUSH["client"], "server_ip": PUSH["server"], "port": int(PUSH["port"])}})  # fmt: skip
    assert empty["slowest"] == [] and empty["error_codes"] == []
    page.goto(console.link("/incident", **WINDOW, **PUSH, metric="latency_p99", step="drill", subject="edge"))
    expect(page.locator("[data-test=one-way]")).to_contain_text("One-way push", timeout=30_000)
    expect(page.locator("[data-test=requests-empty]")).to_contain_text(NO_REQUESTS)
    expect(page.locator("[data-test=slowest]")).to_have_count(0)


def test_panorama_colours_service_edges_by_request_p99_and_error_rate(
    admin_page: Any, console: Any, planted: Any, shot: Any
) -> None:
    page = admin_page
    page.goto(console.link("/panorama", level="ip", port=str(PORT), colour="p99"))
    body = {"time_from": console.scenario_start, "time_to": console.scenario_end, "level": "ip",
            "filter": {"port": PORT}, "limit": 300, "metric": "latency_p99"}  # fmt: skip
    topo = console.call("POST", "/api/v1/analysis/topology", body)
    edge = next(e for e in topo["edges"] if e["target_name"] == "app-04")
    stats = edge["requests"]
    row = page.locator("[data-test=edge-table] tbody tr", has_text="web-02 → app-04")
    expect(row).to_contain_text(f"{PORT}/http", timeout=30_000)
    expect(row).to_contain_text(f"{stats['requests']:,}")
    _shows(row.locator("[data-test=edge-p99]").inner_text(), stats["latency_p99_ms"])
    expect(page.locator("[data-test=colour-by]")).to_have_value("p99")
    row.click()
    details = page.locator("[data-test=edge-requests]")
    expect(details).to_contain_text(f"{stats['requests']:,}")
    _shows(details.locator("strong").first.inner_text(), stats["latency_p99_ms"])
    expect(page.locator("[data-test=incident-link]")).to_have_attribute(
        "href", re.compile("metric=latency_p99")
    )
    shot(page, "panorama-requests-p99")

    page.locator("[data-test=colour-by]").select_option("error_rate")
    page.wait_for_function("() => location.hash.includes('colour=error_rate')")
    errors = page.locator("[data-test=edge-table] tbody tr", has_text="web-02 → app-04").locator(
        "[data-test=edge-errors]"
    )
    expect(errors).to_contain_text(f"{stats['errors']:,}", timeout=30_000)

"""The incident workflow in the browser, on the seed case (db-01 → backup-01:873 pushes a backup every hour).

Window: dragging across the series selects the incident window → compare ranks db-01 → backup-01:873
first → the drill-down shows the one-way push → the PCAP preview announces the packets, the download is a
pcapng tshark reads with that many packets (and the retrieval is audited) → the backtest finds three
hourly occurrences → the conclusion names all of it and copies. Every step's inputs are in the URL.
"""

from __future__ import annotations

import re
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from console_pages import log_in
from playwright.sync_api import expect

pytestmark = pytest.mark.slow

CLIENT, SERVER, PORT = "10.10.1.46", "10.10.5.20", "873"
WINDOW = {"wfrom": "2026-11-20T01:55:00Z", "wto": "2026-11-20T02:10:00Z"}
EDGE = {"client": CLIENT, "server": SERVER, "port": PORT}


def _ms(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000


def _query(page: Any) -> dict[str, str]:
    fragment = urlsplit(page.url).fragment
    return {k: v[0] for k, v in parse_qs(urlsplit(fragment).query).items()}




def test_dragging_on_the_series_selects_the_window_and_compare_ranks_the_push_first(
    admin_page: Any, console: Any, shot: Any
) -> None:
    page = admin_page
    page.goto(console.link("/incident"))
    chart = page.locator("[data-test=series-chart] canvas").first
    expect(chart).to_be_visible()
    page.wait_for_timeout(600)  # the series is drawn
    box = chart.bounding_box()
    start, end = _ms(console.scenario_start), _ms(console.scenario_end)
    left, width = box["x"] + 64, box["width"] - 64 - 24  # the chart's grid (SeriesChart: left 64, right 24)

    def x(at: str) -> float:
        return left + (_ms(at) - start) / (end - start) * width

    y = box["y"] + box["height"] * 0.6
    page.mouse.move(x("2026-11-20T01:55:30Z"), y)
    page.mouse.down()
    page.mouse.move(x("2026-11-20T02:02:00Z"), y, steps=8)
    page.mouse.move(x("2026-11-20T02:09:30Z"), y, steps=8)
    page.mouse.up()
    page.wait_for_function("() => location.hash.includes('wfrom=')")
    q = _query(page)
    assert abs(_ms(q["wfrom"]) - _ms(WINDOW["wfrom"])) <= 60_000, q
    assert abs(_ms(q["wto"]) - _ms(WINDOW["wto"])) <= 60_000, q
    expect(page.locator("[data-test=incident-window]")).to_contain_text("2026-11-20 01:5")
    shot(page, "incident-window")

    page.get_by_role("button", name="Compare with the baseline →").click()
    first = page.locator("[data-test=compare-edges] tbody tr").first
    expect(first).to_contain_text("db-01 (10.10.1.46)", timeout=30_000)
    expect(first).to_contain_text("backup-01 (10.10.5.20):873")
    expect(first).to_contain_text("new")
    expect(page.locator("[data-test=compare-top]")).to_contain_text("burst 02:00:00 → 02:03:00")
    first.click()  # follow it
    page.wait_for_function("() => location.hash.includes('client=10.10.1.46')")
    assert {k: _query(page)[k] for k in EDGE} == EDGE
    expect(page.locator("[data-test=followed-edge]")).to_contain_text(
        "db-01 (10.10.1.46) → backup-01 (10.10.5.20):873"
    )
    expect(first).to_have_class("clickable selected")
    page.wait_for_timeout(500)  # the edge's series with its burst
    shot(page, "incident-compare")


def test_a_panorama_link_preselects_the_edge(admin_page: Any, console: Any) -> None:
    page = admin_page
    page.goto(console.link("/incident", **EDGE))
    expect(page.locator("[data-test=followed-edge]")).to_contain_text("10.10.1.46")
    expect(page.get_by_text("Following the edge")).to_contain_text(":873")
    expect(page.get_by_role("button", name="Compare with the baseline →")).to_be_disabled()  # no window yet
    page.get_by_role("button", name="Use the whole range").click()
    page.wait_for_function("() => location.hash.includes('wfrom=')")
    assert _query(page)["wfrom"] == console.scenario_start


def test_the_drill_down_shows_the_one_way_push(admin_page: Any, console: Any, shot: Any) -> None:
    page = admin_page
    page.goto(console.link("/incident", **WINDOW, **EDGE, step="drill"))
    push = page.locator("[data-test=one-way]")
    expect(push).to_contain_text("One-way push", timeout=30_000)
    expect(push).to_contain_text("db-01 (10.10.1.46) → backup-01 (10.10.5.20):873/tcp")
    expect(push).to_contain_text("the client pushes")
    expect(push).to_contain_text("MiB forward")
    expect(page.locator("[data-test=drill-peers] tbody tr").first).to_contain_text("backup-01")
    expect(page.locator("[data-test=drill-ports] tbody tr").first).to_contain_text("873/tcp")
    expect(page.locator("[data-test=drill-close]")).to_contain_text("fin")
    expect(page.locator("[data-test=drill-failed]")).to_contain_text("server_refused")
    expect(page.locator("[data-test=drill-talkers] tbody tr").first).to_contain_text("10.10.5.20:873")
    shot(page, "incident-drill")


def test_the_pcap_preview_and_download_agree_with_tshark(
    admin_page: Any, console: Any, shot: Any, tmp_path: Path
) -> None:
    page = admin_page
    page.goto(console.link("/incident", **WINDOW, **EDGE, step="pcap"))
    # prefilled from the burst's first minute and the edge
    expect(page.locator("input[name=from]")).to_have_value("2026-11-20T02:00:00Z", timeout=30_000)
    expect(page.locator("input[name=to]")).to_have_value("2026-11-20T02:01:00Z")
    expect(page.locator("input[name=vm]")).to_have_value("db-01")
    expect(page.locator("input[name=filter]")).to_have_value(f"host {SERVER} and port {PORT}")
    page.locator("[data-test=pcap-preview]").click()
    size = page.locator("[data-test=pcap-size]")
    expect(size).to_contain_text("packets", timeout=60_000)
    body = {
        "vm": "db-01",
        "from": "2026-11-20T02:00:00Z",
        "to": "2026-11-20T02:01:00Z",
        "filter": f"host {SERVER} and port {PORT}",
    }
    expected = console.call("POST", "/api/v1/pcap/preview", body)
    assert expected["packets"] > 10_000 and not expected["over_cap"]
    assert f"{expected['packets']:,} packets" in size.inner_text()
    with page.expect_download(timeout=60_000) as info:
        page.locator("[data-test=pcap-download]").click()
    download = info.value
    assert download.suggested_filename.endswith(".pcapng")
    assert download.suggested_filename.startswith("db-01_20261120T020000Z")
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    assert saved.stat().st_size == expected["bytes"]
    shark = subprocess.run(["tshark", "-r", str(saved), "-T", "fields", "-e", "frame.number"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    packets = len(shark.stdout.split())
    assert packets == expected["packets"]
    ports = subprocess.run(["tshark", "-r", str(saved), "-T", "fields", "-e", "tcp.dstport", "-c", "50"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    assert PORT in ports.stdout.split()
    expect(page.locator("[data-test=pcap-downloaded]")).to_contain_text(f"{packets:,} packets")
    audit = console.call("GET", "/api/v1/audit?action=pcap.retrieve&limit=5")
    records = audit if isinstance(audit, list) else audit.get("records", audit.get("items", []))
    assert any(r.get("actor") == "admin" and r.get("packets") == packets for r in records), records
    shot(page, "incident-pcap")


def test_the_backtest_finds_three_hourly_occurrences(admin_page: Any, console: Any, shot: Any) -> None:
    page = admin_page
    page.goto(console.link("/incident", **WINDOW, **EDGE, step="backtest"))
    summary = page.locator("[data-test=backtest-summary]")
    expect(summary).to_contain_text("3 occurrences", timeout=30_000)
    expect(summary).to_contain_text("every 60 min")
    expect(summary).to_contain_text("next expected 2026-11-20 03:00:00 UTC")
    rows = page.locator("[data-test=occurrences] tbody tr")
    expect(rows).to_have_count(3)
    for i, hour in enumerate(("00", "01", "02")):
        expect(rows.nth(i)).to_contain_text(f"2026-11-20 {hour}:00:00")
    assert page.locator("input[name=threshold]").input_value() != ""
    name = page.locator("input[name=signature-name]").input_value()
    assert name == "push-db-01-backup-01-873"
    page.locator("input[name=signature-name]").fill("console-incident-test")
    page.locator("[data-test=signature-save]").click()
    expect(page.locator("[data-test=signature-saved]")).to_contain_text("console-incident-test")
    saved = console.call("GET", "/api/v1/analysis/signatures/console-incident-test")
    assert (
        saved["filter"]["ip"] == CLIENT
        and saved["filter"]["peer"] == SERVER
        and saved["filter"]["port"] == int(PORT)
    )
    console.call("DELETE", "/api/v1/analysis/signatures/console-incident-test")
    page.wait_for_timeout(400)
    shot(page, "incident-backtest")
    # a changed threshold goes into the URL and reruns
    page.locator("input[name=threshold]").fill("1000000000000")
    page.get_by_role("button", name="Run backtest").click()
    expect(summary).to_contain_text("0 occurrences")
    assert _query(page)["thr"] == "1000000000000"


def test_the_conclusion_sums_up_and_copies(admin_page: Any, console: Any, shot: Any) -> None:
    page = admin_page
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=console.url)
    page.goto(console.link("/incident", **WINDOW, **EDGE, step="drill"))
    expect(page.locator("[data-test=one-way]")).to_contain_text("One-way push", timeout=30_000)
    page.get_by_role("button", name="Conclusion").click()
    text = page.locator("[data-test=conclusion]")
    expect(text).to_have_value(
        re.compile(
            r"db-01 \(10\.10\.1\.46\) pushing about \d+(\.\d)? MiB one way to backup-01 \(10\.10\.5\.20\):873, and it happens every 60 min"
        ),
        timeout=30_000,
    )
    value = text.input_value()
    assert "Incident window: 2026-11-20 01:55 → 02:10 UTC" in value
    assert (
        "every 60 min" in value
        and re.search(r"3 occurrences of bytes > [\d.]+ MiB per 1m on this edge", value)
        and "scheduled bulk transfer" in value
    )
    assert "Link: " in value and "client=10.10.1.46" in value
    page.locator("[data-test=conclusion-copy]").click()
    expect(page.get_by_role("status")).to_contain_text("Copied")
    assert page.evaluate("() => navigator.clipboard.readText()") == value
    shot(page, "incident-conclusion")


def test_without_the_permissions_the_buttons_are_disabled_and_errors_are_words(
    page: Any, console: Any, console_errors: list[str]
) -> None:
    name, password = console.make_user("viewer")
    path = console.link("/incident", **WINDOW, **EDGE, step="pcap").split("#", 1)[1]
    log_in(page, console, name, password, path)
    expect(page.locator("[data-test=pcap-preview]")).to_be_disabled()
    expect(page.locator("[data-test=pcap-download]")).to_be_disabled()
    expect(page.get_by_text("You need the pcap:read permission")).to_be_visible()
    page.get_by_role("button", name="Backtest").first.click()
    expect(page.locator("[data-test=backtest-summary]")).to_contain_text("3 occurrences", timeout=30_000)
    expect(page.locator("[data-test=signature-save]")).to_be_disabled()
    expect(page.get_by_text("You need the signatures:write permission")).to_be_visible()
    # a window the server refuses: the reason in words, not a blank page
    page.goto(
        console.link("/incident", wfrom="2026-11-20T02:10:00Z", wto="2026-11-20T01:55:00Z", step="compare")
    )
    expect(page.get_by_role("alert")).to_contain_text("Could not load this", timeout=30_000)
    expect(page.get_by_role("heading", name="2. Compare with a baseline")).to_be_visible()
    console_errors[:] = [e for e in console_errors if "422" not in e and "400" not in e]

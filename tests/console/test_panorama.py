"""The panorama in a browser: the seed case's five projects, project scope, drill-down, edge details."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from console_pages import log_in
from playwright.sync_api import expect

pytestmark = pytest.mark.slow

PROJECTS = {"shop", "payments", "analytics", "ci", "infra"}




def _node_names(page: Any) -> set[str]:
    page.locator("[data-test=node-list] button").first.wait_for()
    buttons = page.locator("[data-test=node-list] button")
    return {buttons.nth(i).get_attribute("data-name") for i in range(buttons.count())}


def _click_graph_node(page: Any, node_id: str) -> None:
    """A real click on the canvas, where Cytoscape drew the node."""
    box = page.locator("[data-test=graph]").bounding_box()
    pos = page.locator("[data-test=graph]").evaluate(
        "(el, id) => el.cy.getElementById(id).renderedPosition()", node_id
    )
    page.mouse.click(box["x"] + pos["x"], box["y"] + pos["y"])


def test_panorama_shows_the_five_projects_and_expands_one(
    admin_page: Any, console: Any, shot: Callable[[Any, str], Path]
) -> None:
    page = admin_page
    expect(page.locator("[data-test=graph] canvas").first).to_be_visible()
    assert _node_names(page) == PROJECTS
    rows = page.locator("[data-test=edge-table] tbody tr")
    assert rows.count() > 5
    assert {n for n in PROJECTS if page.locator("[data-test=edge-table]").get_by_text(n).count()} == PROJECTS
    shot(page, "panorama")

    # click the shop node on the canvas: VMs of shop
    shop = page.locator("[data-test=node-list] button[data-name=shop]").get_attribute("data-node")
    _click_graph_node(page, shop)
    page.wait_for_url("**level=vm**")
    assert "project=shop" in page.url
    expect(page.locator("[data-test=node-list] button[data-name=db-01]")).to_be_visible()
    shot(page, "panorama-shop-vms")

    # the db-01 -> backup-01 edge (the incident's push) is first; select it from the keyboard
    first = page.locator("[data-test=edge-table] tbody tr").first
    expect(first).to_contain_text("db-01 → backup-01")
    first.focus()
    page.keyboard.press("Enter")
    details = page.locator("[data-test=details]")
    expect(details).to_contain_text("873")
    link = page.locator("[data-test=incident-link]").get_attribute("href")
    assert "client=db-01" in link and "server=backup-01" in link and "port=873" in link
    assert "from=2026-11-20T00%3A00%3A00Z" in link or "from=2026-11-20T00:00:00Z" in link

    # Back returns to the projects
    page.go_back()
    page.wait_for_url(lambda u: "level=vm" not in u)
    assert _node_names(page) == PROJECTS


def test_a_shop_viewer_sees_no_other_project(page: Any, console: Any, console_errors: list[str],
                                             shot: Callable[[Any, str], Path]) -> None:  # fmt: skip
    user, password = console.make_user("viewer", ["shop"])
    log_in(page, console, user, password, "/panorama")
    names = _node_names(page)
    assert "shop" in names and not names & (PROJECTS - {"shop"}), names
    table = page.locator("[data-test=edge-table]").inner_text()
    assert not [p for p in PROJECTS - {"shop"} if p in table], table
    page.goto(console.link("/panorama", level="subnet"))
    page.locator("[data-test=node-list] button").first.wait_for()
    text = page.locator("main").inner_text()
    assert not [p for p in PROJECTS - {"shop"} if f"{p}-subnet" in text]
    shot(page, "panorama-shop-viewer")


def test_empty_range_says_what_to_do(admin_page: Any, console: Any) -> None:
    page = admin_page
    page.goto(f"{console.url}/#/panorama?from=2020-01-01T00:00:00Z&to=2020-01-01T01:00:00Z")
    expect(page.locator("[data-test=empty]")).to_contain_text("All stored data")

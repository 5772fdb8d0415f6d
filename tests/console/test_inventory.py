"""The inventory in a browser: tabs per kind, VMs listed, search, a VM's history (where it ran when)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.slow


def test_inventory_lists_vms_searches_and_shows_a_vms_history(
    admin_page: Any, console: Any, shot: Callable[[Any, str], Path]
) -> None:
    page = admin_page
    page.goto(console.link("/inventory"))
    table = page.locator("[data-test=inventory-table]")
    expect(table.locator("tbody tr").first).to_be_visible()
    assert table.locator("tbody tr").count() == 150  # the seed case's VMs
    expect(page.get_by_role("tab", name="VMs")).to_have_attribute("aria-selected", "true")

    page.locator("[data-test=inventory-search]").fill("db-0")
    page.wait_for_url("**q=db-0**")
    expect(table.locator("tbody tr[data-key='shop/db-01']")).to_be_visible()
    assert all("db-0" in t for t in table.locator("tbody tr[data-key]").all_inner_texts())

    table.locator("tbody tr[data-key='shop/db-01']").click()
    history = page.locator("[data-test=history]")
    expect(history).to_contain_text("hv-07")  # where db-01 runs
    expect(history).to_contain_text("now")
    assert "key=shop%2Fdb-01" in page.url or "key=shop/db-01" in page.url
    shot(page, "inventory")

    page.get_by_role("tab", name="Subnets").click()
    expect(table).to_contain_text("10.10.1.0/24")  # switching kind clears the search
    assert page.locator("[data-test=inventory-search]").input_value() == ""
    page.get_by_role("tab", name="Projects").click()
    for name in ("shop", "payments", "analytics", "ci", "infra"):
        expect(table).to_contain_text(name)


def test_a_shop_viewer_sees_only_shop_in_the_inventory(
    page: Any, console: Any, console_errors: list[str]
) -> None:
    user, password = console.make_user("viewer", ["shop"])
    page.goto(console.link("/login", next=console.link("/inventory", kind="project").split("#", 1)[1]))
    page.get_by_label("User name").fill(user)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/#/inventory**")
    rows = page.locator("[data-test=inventory-table] tbody tr[data-key]")
    expect(rows.first).to_be_visible()
    assert rows.all_inner_texts() and all(t.split("\t")[0].strip() == "shop" for t in rows.all_inner_texts())

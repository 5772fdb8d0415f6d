"""Logging in and out of the console, who is logged in, an expired session, and the offline API docs."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest

pytestmark = pytest.mark.slow


def test_login_shows_the_user_role_and_projects(page: Any, console: Any, console_errors: list[str], shot: Any) -> None:
    page.goto(console.url + "/")
    page.wait_for_url("**/#/login**")
    shot(page, "login")
    page.get_by_label("User name").fill("admin")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Log in").click()
    assert page.get_by_test_id("login-error").inner_text() == "Wrong user name or password."
    page.get_by_label("Password").fill(console.admin_password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/#/panorama**")
    who = page.get_by_test_id("who")
    assert "admin" in who.inner_text() and "all projects" in who.inner_text()
    console_errors[:] = [e for e in console_errors if "401" not in e]  # the refused login's, on purpose


def test_a_project_user_sees_its_projects_and_logs_out(page: Any, console: Any, console_errors: list[str]) -> None:
    name, password = console.make_user("viewer", ["shop", "payments"])
    page.goto(console.link("/login"))
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/#/panorama**")
    who = page.get_by_test_id("who").inner_text()
    assert name in who and "viewer" in who and "payments, shop" in who
    assert page.get_by_role("link", name="Audit").count() == 0  # viewers have no audit:read
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url("**/#/login**")
    page.goto(console.link("/fleet"))  # a deep link after logging out: the login page, then back there
    page.wait_for_url("**/#/login?next=**")
    assert "next=%2Ffleet" in page.url or "next=/fleet" in page.url


def test_an_expired_session_leads_back_to_login_in_words(page: Any, console: Any, console_errors: list[str]) -> None:
    page.goto(console.link("/login"))
    page.get_by_label("User name").fill("admin")
    page.get_by_label("Password").fill(console.admin_password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/#/panorama**")
    context = page.context
    context.clear_cookies(name="cloudtap_session")  # as if the session expired on the server
    page.reload()
    page.wait_for_url("**/#/login?**expired=1**")
    assert "session has expired" in page.get_by_role("alert").inner_text()
    console_errors[:] = [e for e in console_errors if "401" not in e]


def test_the_api_docs_load_nothing_from_elsewhere(page: Any, console: Any, console_errors: list[str], shot: Any) -> None:
    origins: set[str] = set()
    page.on("request", lambda r: origins.add(f"{urlsplit(r.url).scheme}://{urlsplit(r.url).netloc}"))
    page.goto(console.url + "/docs")
    page.get_by_text("/api/v1/query/extent").first.wait_for()
    shot(page, "api-docs")
    assert origins == {console.url}, origins

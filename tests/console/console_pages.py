"""Console test helpers shared by the test modules (``from console_pages import log_in``)."""

from __future__ import annotations

from typing import Any


def log_in(page: Any, console: Any, user: str, password: str, path: str = "/panorama") -> None:
    """Log in through the login page and land on ``path``: a page (the seed case's range is added) or a
    page with its own query (``/incident?client=...``, kept as it is)."""
    target = path if "?" in path else console.link(path).split("#", 1)[1]
    page.goto(console.link("/login", next=target))
    page.get_by_label("User name").fill(user)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"**/#{path.split('?', 1)[0]}**")

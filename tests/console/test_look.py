"""Every page at 1280×800 and on a wide screen, light and dark as the system says, usable from the keyboard."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.slow

PAGES = ["/panorama", "/incident", "/fleet", "/inventory", "/policies", "/diagnose", "/audit"]


def _luminance(css_color: str) -> float:
    """0 (black) .. 1 (white) of an ``rgb(r, g, b)`` value."""
    r, g, b = (int(v) for v in css_color[css_color.index("(") + 1 : css_color.index(")")].split(",")[:3])
    return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255


@pytest.mark.parametrize("path", PAGES)
def test_no_page_overflows_1280_pixels_or_logs_an_error(
    admin_page: Any, console: Any, console_errors: list[str], path: str
) -> None:
    admin_page.goto(console.link(path))
    admin_page.locator("main h1, main h2").first.wait_for()
    admin_page.wait_for_load_state("networkidle")
    overflow = admin_page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{path} is {overflow} px wider than a 1280 px screen"
    assert not admin_page.get_by_text("Could not load this").count(), f"{path} shows an error on the demo's data"


@pytest.mark.parametrize("scheme", ["dark", "light"])
def test_the_theme_follows_the_system(browser: Any, console: Any, scheme: str, shot: Any) -> None:
    context = browser.new_context(color_scheme=scheme, viewport={"width": 1920, "height": 1080}, ignore_https_errors=True)
    try:
        page = context.new_page()
        page.goto(console.link("/login"))
        background = page.evaluate("getComputedStyle(document.documentElement).backgroundColor")
        page.get_by_label("User name").fill("admin")
        page.get_by_label("Password").fill(console.admin_password)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url("**/#/panorama**")
        page.goto(console.link("/panorama"))  # the seed case's range
        page.locator("canvas").first.wait_for()
        page.wait_for_load_state("networkidle")
        shot(page, f"panorama-wide-{scheme}")
    finally:
        context.close()
    light = _luminance(background) > 0.5
    assert light == (scheme == "light"), background


def test_the_keyboard_reaches_the_content_and_every_page(admin_page: Any, console: Any) -> None:
    admin_page.goto(console.link("/panorama"))
    admin_page.reload()  # a fresh page: focus starts at the top
    admin_page.locator("main h1").first.wait_for()
    admin_page.keyboard.press("Tab")  # the first stop is "Skip to content"
    assert admin_page.evaluate("document.activeElement.textContent.trim()") == "Skip to content"
    visited = []
    for _ in range(12):  # then the menu, in order
        admin_page.keyboard.press("Tab")
        visited.append(admin_page.evaluate("document.activeElement.textContent.trim()"))
    assert {"Panorama", "Incident", "Fleet", "Inventory", "Audit"} <= set(visited)
    admin_page.keyboard.press("Shift+Tab")
    while admin_page.evaluate("document.activeElement.textContent.trim()") != "Fleet":
        admin_page.keyboard.press("Shift+Tab")
    admin_page.keyboard.press("Enter")
    admin_page.wait_for_url("**/#/fleet**")

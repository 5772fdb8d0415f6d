"""The console in a real browser against a real server holding the demo's seed case.

One server per test session (``demo_stack``: synthesise, replay through an agent, ship, store, then the
demo's CLI walk; about a minute). Set ``CLOUDTAP_CONSOLE_DEV=DIR`` to use a demo already running from
``python -m cloudtap.demo --out DIR --keep-running`` instead (fast iteration).

The browser is Debian's Chromium (``/usr/bin/chromium``), driven by Playwright; no browser is ever
downloaded. Every page's console errors fail the test that opened it, and ``shot(page, name)`` saves a
screenshot under ``out/console-screenshots`` (``CLOUDTAP_SCREENSHOTS`` to move it).
"""

from __future__ import annotations

import json
import os
import secrets
import ssl
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from console_pages import log_in

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(os.environ.get("CLOUDTAP_SCREENSHOTS", REPO / "out" / "console-screenshots"))
#: Errors a page may log without being broken: none, except the ones a test provokes on purpose.
QUIET = ("favicon",)


@dataclass
class Console:
    """The running server the console tests use."""

    url: str
    ca_file: Path
    admin_password: str
    scenario_start: str  #: ISO of the seed case's first second
    scenario_end: str
    _tokens: dict[str, str] = field(default_factory=dict)

    def _context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def call(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        """An API call as the admin (or with ``token``); returns decoded JSON (raises on HTTP errors)."""
        token = token or self.admin_token()
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})  # fmt: skip
        with urllib.request.urlopen(req, timeout=60, context=self._context()) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def token_for(self, user: str, password: str) -> str:
        """An API token of ``user``."""
        if user not in self._tokens:
            body = json.dumps({"username": user, "password": password, "name": "console-test"}).encode()
            req = urllib.request.Request(self.url + "/api/v1/auth/token", data=body,
                                         headers={"Content-Type": "application/json"})  # fmt: skip
            with urllib.request.urlopen(req, timeout=60, context=self._context()) as resp:
                self._tokens[user] = json.loads(resp.read())["token"]
        return self._tokens[user]

    def admin_token(self) -> str:
        return self.token_for("admin", self.admin_password)

    def make_user(self, role: str, projects: list[str] | None = None) -> tuple[str, str]:
        """A new local user with one role binding; returns ``(name, password)``."""
        name = f"{role}-{secrets.token_hex(3)}"
        password = secrets.token_urlsafe(16)
        self.call("POST", "/api/v1/users",
                  {"name": name, "password": password, "bindings": [{"role": role, "projects": projects}]})  # fmt: skip
        return name, password

    def link(self, path: str, **query: str) -> str:
        """A console link: ``/#/path?from=..&to=..`` (default: the whole seed case)."""
        query = {"from": self.scenario_start, "to": self.scenario_end, **query}
        return f"{self.url}/#{path}?" + "&".join(f"{k}={urllib.request.quote(v)}" for k, v in query.items())


def _scenario_span() -> tuple[str, str]:
    from datetime import timedelta

    from cloudtap.synth.scenario import builtin_scenario

    scn = builtin_scenario("seed-case")
    end = scn.start + timedelta(seconds=scn.duration)
    return scn.start.strftime("%Y-%m-%dT%H:%M:%SZ"), end.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture(scope="session")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    """The server holding the seed case (started for the session, or the dev one)."""
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (make setup installs it)")
    from cloudtap.server.console import built

    if not built():
        pytest.fail("the console is not built: run `make console`")
    start, end = _scenario_span()
    dev = os.environ.get("CLOUDTAP_CONSOLE_DEV")
    if dev:
        out = Path(dev)
        yield Console((out / "server.url").read_text().strip(), out / "tls" / "ca.pem",
                      (out / "admin-password").read_text().strip(), start, end)  # fmt: skip
        return
    from cloudtap.demo.stack import demo_stack
    from cloudtap.demo.workflow import walk

    with demo_stack(tmp_path_factory.mktemp("console-demo"), "seed-case", 0) as stack:
        walk(stack)  # as `make demo` leaves it: a saved signature, a PCAP pull in the audit log
        yield Console(stack.url, stack.ca_file, stack.admin_password, start, end)


@pytest.fixture(scope="session", autouse=True)
def _test_ids(playwright: Any) -> None:
    """``get_by_test_id`` finds the console's ``data-test`` attributes."""
    playwright.selectors.set_test_id_attribute("data-test")


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    """Debian's Chromium, headless, with its network chatter off (this machine has no internet)."""
    return {
        **browser_type_launch_args,
        "executable_path": str(CHROMIUM),
        "args": ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"],
    }  # fmt: skip


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args: dict[str, Any]) -> dict[str, Any]:
    """1280×800 (the smallest screen the console is made for); the demo's private CA is not in Chromium's store."""
    return {**browser_context_args, "viewport": {"width": 1280, "height": 800}, "ignore_https_errors": True,
            "accept_downloads": True}  # fmt: skip


@pytest.fixture
def console_errors(page: Any) -> Iterator[list[str]]:
    """Errors the page logs or throws; the test fails if any is left at its end (a test may clear expected ones)."""
    errors: list[str] = []
    failed: list[str] = []  # which requests failed, to explain "Failed to load resource"
    page.on("console", lambda m: errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))
    page.on("response", lambda r: failed.append(f"{r.status} {r.request.method} {r.url}") if r.status >= 400 else None)
    yield errors
    real = [e for e in errors if not any(q in e for q in QUIET)]
    assert not real, "the page logged errors:\n" + "\n".join(real) + "\nfailed requests:\n" + "\n".join(failed)




@pytest.fixture
def login(page: Any, console: Console) -> Callable[..., None]:
    """``login(user, password, path="/panorama")``: log the test's page in through the login page."""

    def go(user: str, password: str, path: str = "/panorama") -> None:
        log_in(page, console, user, password, path)

    return go


@pytest.fixture
def admin_page(page: Any, console: Console, console_errors: list[str]) -> Any:
    """A page logged in as the admin, on the panorama over the whole seed case."""
    log_in(page, console, "admin", console.admin_password)
    return page


@pytest.fixture
def shot() -> Callable[[Any, str], Path]:
    """``shot(page, name)``: a full-page screenshot, saved as ``<SCREENSHOTS>/<name>.png``."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def take(page: Any, name: str) -> Path:
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take

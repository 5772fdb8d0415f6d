"""Single sign-on in the browser: the console's SSO button, the provider, back logged in with mapped roles.

The provider is the test OpenID Connect provider (``tests/oidc_provider.py``) on loopback; cloudtap runs
in-process with ``auth.oidc`` pointing at it and an empty store.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloudtap.server.api.app import create_app
from cloudtap.server.settings import AuthSection, OidcSection, ServerSettings
from oidc_provider import CLIENT_ID, CLIENT_SECRET, TestProvider, TestUser, serve_provider
from uvicorn_thread import serve_in_thread

pytestmark = pytest.mark.slow


@pytest.fixture
def sso_console(open_store: Any, tmp_path: Path) -> Iterator[tuple[str, TestProvider]]:
    with serve_provider() as provider:
        section = OidcSection(issuer=provider.url, client_id=CLIENT_ID, client_secret=CLIENT_SECRET,
                              group_roles={"shop-ops": [{"role": "operator", "projects": ["shop"]}]},
                              label="Bank SSO")  # fmt: skip
        settings = ServerSettings(
            auth=AuthSection(db_path=tmp_path / "access.sqlite", audit_log=tmp_path / "audit.jsonl", oidc=section)
        )
        app = create_app(settings, open_store())
        try:
            with serve_in_thread(app) as url:
                provider.redirect_uris = {f"{url}/api/v1/auth/oidc/callback"}
                yield url, provider
        finally:
            app.state.oidc_rp.close()


def test_sso_login_in_the_browser(page: Any, sso_console: tuple[str, TestProvider], console_errors: list[str]) -> None:
    url, provider = sso_console
    provider.user = TestUser("alice", ["shop-ops"])
    page.goto(f"{url}/#/fleet")
    page.wait_for_url("**/#/login?next=**")
    assert page.get_by_test_id("sso").inner_text() == "Log in with Bank SSO"
    page.get_by_test_id("sso").click()  # to the provider and back
    page.wait_for_url("**/#/fleet**")
    who = page.get_by_test_id("who").inner_text()
    assert "alice" in who and "operator" in who and "shop" in who

"""Single sign-on end to end: a browser-like httpx client, the test OIDC provider and a uvicorn-served cloudtap."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from starlette.routing import NoMatchFound

from cloudtap.errors import CloudtapError
from cloudtap.server.access.oidc import PendingLogins, check_url, merge_bindings, parse_group_roles
from cloudtap.server.access.principal import RoleBinding
from cloudtap.server.api.guard import CSRF_COOKIE, SESSION_COOKIE
from cloudtap.server.api.routes import oidc as oidc_routes
from cloudtap.server.api.routes.oidc import BINDING_COOKIE, local_path
from cloudtap.server.audit import AuditLog
from cloudtap.server.settings import AuthSection, OidcSection, ServerSettings
from oidc_provider import CLIENT_ID, CLIENT_SECRET, TestProvider, TestUser, serve, serve_provider

LOGIN = "/api/v1/auth/oidc/login"
CALLBACK = "/api/v1/auth/oidc/callback"
GROUP_ROLES = {
    "shop-ops": [{"role": "operator", "projects": ["shop"]}],
    "bank-ops": [{"role": "operator", "projects": ["bank"]}],
    "net-admins": [{"role": "admin"}],
}


@dataclass
class Cloudtap:
    """The served app."""

    url: str
    app: Any
    audit: AuditLog

    def client(self) -> httpx.Client:
        """A fresh 'browser': its own cookie jar, following redirects."""
        return httpx.Client(base_url=self.url, follow_redirects=True, timeout=20)

    def logins(self) -> list[dict[str, Any]]:
        return self.audit.read(action="auth.login")


def _create(settings: ServerSettings, store: Any) -> Any:
    from cloudtap.server.api.app import create_app

    app = create_app(settings, store)
    try:
        app.url_path_for("oidc_callback")
    except NoMatchFound:
        app.include_router(oidc_routes.router)  # until app.py includes it
    return app


@pytest.fixture(scope="module")
def provider() -> Iterator[TestProvider]:
    with serve_provider() as p:
        yield p


@contextmanager
def serve_cloudtap(provider: TestProvider, store: Any, tmp_path: Path, **oidc: Any) -> Iterator[Cloudtap]:
    """cloudtap with ``auth.oidc`` pointing at ``provider``, served by uvicorn; its callback registered there."""
    section = OidcSection(issuer=provider.url, client_id=CLIENT_ID, client_secret=CLIENT_SECRET,
                          group_roles=GROUP_ROLES, **oidc)  # fmt: skip
    settings = ServerSettings(auth=AuthSection(db_path=tmp_path / "access.sqlite", audit_log=tmp_path / "audit.jsonl",
                                               oidc=section))  # fmt: skip
    app = _create(settings, store)
    try:
        with serve(app) as url:
            provider.redirect_uris = {f"{url}{CALLBACK}"}
            yield Cloudtap(url, app, app.state.audit)
    finally:
        if getattr(app.state, "oidc_rp", None) is not None:
            app.state.oidc_rp.close()


@pytest.fixture
def cloudtap(provider: TestProvider, open_store: Any, tmp_path: Path) -> Iterator[Cloudtap]:
    provider.reset()
    with serve_cloudtap(provider, open_store(), tmp_path) as served:
        yield served


def _me(browser: httpx.Client) -> httpx.Response:
    return browser.get("/api/v1/auth/me")


def test_sso_login_maps_groups_to_role_and_projects(cloudtap: Cloudtap, provider: TestProvider) -> None:
    provider.user = TestUser("alice", ["shop-ops", "developers"])
    with cloudtap.client() as browser:
        assert browser.get("/api/v1/auth/oidc").json() == {"enabled": True, "issuer": provider.url,
                                                            "login_url": LOGIN, "label": "single sign-on"}  # fmt: skip
        r = browser.get(LOGIN, params={"next": "/api/v1/auth/me"})
        assert r.status_code == 200, r.text
        assert str(r.url) == f"{cloudtap.url}/api/v1/auth/me"
        me = r.json()
        assert me["name"] == "alice" and me["roles"] == ["operator"]
        assert me["bindings"] == [{"role": "operator", "projects": ["shop"]}]
        assert me["permissions"]["pcap:read"] == ["shop"] and "users:manage" not in me["permissions"]
        # the hops: cloudtap -> provider -> callback -> next
        to_provider, from_provider, callback = r.history
        assert to_provider.status_code == callback.status_code == 302
        auth = parse_qs(urlsplit(to_provider.headers["location"]).query)
        assert auth["code_challenge_method"] == ["S256"] and auth["nonce"] and auth["state"]
        assert auth["redirect_uri"] == [f"{cloudtap.url}{CALLBACK}"] and "openid" in auth["scope"][0].split()
        assert "code_verifier" not in auth
        cookies = callback.headers.get_list("set-cookie")
        session = next(c for c in cookies if c.startswith(f"{SESSION_COOKIE}="))
        assert "HttpOnly" in session and "samesite=lax" in session.lower() and "Path=/" in session
        assert any(c.startswith(f"{CSRF_COOKIE}=") for c in cookies)
        assert any(c.startswith(f"{BINDING_COOKIE}=") and "Max-Age=0" in c for c in cookies)  # cleared
    assert provider.token_requests == [
        {"auth_method": "client_secret_basic", "has_verifier": True, "pkce_ok": True}
    ]
    user = cloudtap.app.state.access.user("alice")
    assert user["source"] == "oidc" and user["bindings"] == [{"role": "operator", "projects": ["shop"]}]
    (entry,) = cloudtap.logins()
    assert entry["actor"] == "alice" and entry["outcome"] == "ok" and entry["via"] == "oidc"
    assert "code" not in entry and "state" not in entry


def test_the_next_login_follows_group_changes(cloudtap: Cloudtap, provider: TestProvider) -> None:
    provider.user = TestUser("bob", ["shop-ops", "bank-ops"])
    with cloudtap.client() as first:
        me = first.get(LOGIN, params={"next": "/api/v1/auth/me"}).json()
        assert me["bindings"] == [{"role": "operator", "projects": ["bank", "shop"]}]
        provider.user = TestUser("bob", ["net-admins", "shop-ops"])
        with cloudtap.client() as browser:
            me = browser.get(LOGIN, params={"next": "/api/v1/auth/me"}).json()
        assert me["roles"] == ["admin", "operator"] and me["permissions"]["users:manage"] == "*"
        provider.user = TestUser("bob", ["developers"])  # left every mapped group
        with cloudtap.client() as browser:
            assert browser.get(LOGIN).status_code == 403
        assert cloudtap.app.state.access.user("bob")["bindings"] == []
        assert _me(first).json()["permissions"] == {}  # the open session keeps no role either


def test_a_user_in_no_mapped_group_is_refused(cloudtap: Cloudtap, provider: TestProvider) -> None:
    provider.user = TestUser("mallory", ["developers", "/shop-ops"])
    with cloudtap.client() as browser:
        r = browser.get(LOGIN, params={"next": "/api/v1/auth/me"})
        assert r.status_code == 403
        assert "no group" in r.json()["detail"] and "group_roles" in r.json()["detail"]
        assert SESSION_COOKIE not in browser.cookies
        assert _me(browser).status_code == 401
    with pytest.raises(Exception, match="no user"):
        cloudtap.app.state.access.user("mallory")
    (entry,) = cloudtap.logins()
    assert entry["outcome"] == "refused" and entry["user"] == "mallory" and "no group" in entry["reason"]


def test_a_local_account_cannot_be_taken_over_by_sso(cloudtap: Cloudtap, provider: TestProvider) -> None:
    cloudtap.app.state.access.add_user("carol", "a long local password", [RoleBinding("viewer")])
    provider.user = TestUser("carol", ["net-admins"])
    with cloudtap.client() as browser:
        r = browser.get(LOGIN)
        assert r.status_code == 403 and "local account" in r.json()["detail"]
        assert SESSION_COOKIE not in browser.cookies
    assert cloudtap.app.state.access.user("carol")["bindings"] == [{"role": "viewer", "projects": None}]


@pytest.mark.parametrize("tamper, why", [
    ("forged", "signature"), ("unsigned", "signature"), ("hs256", "signature"), ("expired", "expired"),
    ("audience", "aud"), ("nonce", "nonce"), ("issuer", "iss"), ("at_hash", "at_hash"),
])  # fmt: skip
def test_a_bad_id_token_is_refused(cloudtap: Cloudtap, provider: TestProvider, tamper: str, why: str) -> None:
    provider.user = TestUser("dave", ["net-admins"])
    provider.tamper = tamper
    with cloudtap.client() as browser:
        r = browser.get(LOGIN, params={"next": "/api/v1/auth/me"})
        assert r.status_code == 401, r.text
        assert why in r.json()["detail"]
        assert SESSION_COOKIE not in browser.cookies and _me(browser).status_code == 401
    (entry,) = cloudtap.logins()
    assert entry["outcome"] == "refused" and entry["actor"] is None and why in entry["reason"]


def _callback_url(browser: httpx.Client, next_path: str = "/") -> str:
    """Run the login up to the provider's redirect back; the callback URL, not yet called."""
    r = browser.get(LOGIN, params={"next": next_path}, follow_redirects=False)
    assert r.status_code == 302
    back = browser.get(r.headers["location"], follow_redirects=False)
    assert back.status_code == 302
    return str(back.headers["location"])


def test_a_replayed_or_unknown_state_is_refused(cloudtap: Cloudtap, provider: TestProvider) -> None:
    provider.user = TestUser("erin", ["shop-ops"])
    with cloudtap.client() as browser:
        url = _callback_url(browser)
        assert browser.get(url, follow_redirects=False).status_code == 302
        assert SESSION_COOKIE in browser.cookies
    with cloudtap.client() as browser:
        replay = browser.get(url)
        assert replay.status_code == 400 and "already used" in replay.json()["detail"]
        assert SESSION_COOKIE not in browser.cookies
        code = parse_qs(urlsplit(url).query)["code"][0]
        unknown = browser.get(CALLBACK, params={"code": code, "state": "a-state-cloudtap-never-issued"})
        assert unknown.status_code == 400 and SESSION_COOKIE not in browser.cookies
        assert browser.get(CALLBACK, params={"code": code}).status_code == 400
    outcomes = [e["outcome"] for e in cloudtap.logins()]
    assert outcomes == ["ok", "refused", "refused", "refused"]


def test_a_login_started_in_another_browser_is_refused(cloudtap: Cloudtap, provider: TestProvider) -> None:
    provider.user = TestUser("frank", ["shop-ops"])
    with cloudtap.client() as attacker:
        url = _callback_url(attacker)
    with cloudtap.client() as victim:
        r = victim.get(url)
        assert r.status_code == 400 and "another browser" in r.json()["detail"]
        assert SESSION_COOKIE not in victim.cookies


def test_the_provider_refusing_is_reported(cloudtap: Cloudtap, provider: TestProvider) -> None:
    provider.user = None  # nobody logs in: the provider answers error=access_denied
    with cloudtap.client() as browser:
        r = browser.get(LOGIN)
        assert r.status_code == 401 and "access_denied" in r.json()["detail"]
    assert cloudtap.logins()[-1]["outcome"] == "refused"


def test_next_never_leaves_the_server(cloudtap: Cloudtap, provider: TestProvider) -> None:
    provider.user = TestUser("grace", ["shop-ops"])
    for next_path in ("https://evil.example", "//evil.example/x", "/\\evil.example", "evil"):
        with cloudtap.client() as browser:
            r = browser.get(LOGIN, params={"next": next_path})
            assert urlsplit(str(r.url)).netloc == urlsplit(cloudtap.url).netloc, next_path
            assert str(r.history[-1].headers["location"]) == "/"
            assert SESSION_COOKIE in browser.cookies


def test_the_provider_is_verified_with_ca_file(open_store: Any, tmp_path: Path) -> None:
    from cloudtap.tls import client_ssl_context, make_ca, make_certificate

    ca = make_ca(tmp_path / "pki")
    with serve_provider(
        make_certificate(tmp_path / "pki", tmp_path / "pki", "idp", ["127.0.0.1"])
    ) as provider:
        assert provider.url.startswith("https://")
        provider.user = TestUser("heidi", ["shop-ops"])
        store = open_store()
        with (
            serve_cloudtap(provider, store, tmp_path / "untrusted") as cloudtap,
            cloudtap.client() as browser,
        ):
            r = browser.get(LOGIN, follow_redirects=False)
            assert r.status_code == 502 and "CERTIFICATE_VERIFY_FAILED" in r.json()["detail"]
        with serve_cloudtap(provider, store, tmp_path / "trusted", ca_file=ca.cert) as cloudtap:
            trusting = client_ssl_context(ca.cert)
            with httpx.Client(base_url=cloudtap.url, follow_redirects=True, verify=trusting) as browser:
                me = browser.get(LOGIN, params={"next": "/api/v1/auth/me"}).json()
            assert me["name"] == "heidi" and me["bindings"] == [{"role": "operator", "projects": ["shop"]}]


def test_local_path() -> None:
    assert local_path("/flows?project=shop#top") == "/flows?project=shop#top"
    for bad in (
        None,
        "",
        "https://evil.example",
        "//evil.example",
        "/\\evil",
        "\\\\evil",
        "/a\r\nLocation: x",
        "http:/evil",
        "javascript:alert(1)",
        "/" + "a" * 3000,
    ):
        assert local_path(bad) == "/", bad


def test_sso_not_configured(open_store: Any, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    settings = ServerSettings(
        auth=AuthSection(db_path=tmp_path / "a.sqlite", audit_log=tmp_path / "audit.jsonl")
    )
    with TestClient(_create(settings, open_store())) as client:
        assert client.get("/api/v1/auth/oidc").json() == {"enabled": False, "issuer": None, "login_url": None,
                                                                    "label": None}
        for path in (LOGIN, CALLBACK):
            r = client.get(path, params={"state": "x", "code": "y"}, follow_redirects=False)
            assert r.status_code == 404 and r.json()["detail"] == "single sign-on is not configured"


def test_an_unreachable_provider_is_a_502(open_store: Any, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    with socket.socket() as sock:  # a port nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    oidc = OidcSection(issuer=url, client_id=CLIENT_ID, group_roles=GROUP_ROLES)
    settings = ServerSettings(
        auth=AuthSection(db_path=tmp_path / "a.sqlite", audit_log=tmp_path / "audit.jsonl", oidc=oidc)
    )
    with TestClient(_create(settings, open_store())) as client:
        r = client.get(LOGIN, follow_redirects=False)
        assert r.status_code == 502 and "cannot reach the identity provider" in r.json()["detail"]


def test_group_roles_merge_and_checks() -> None:
    roles = parse_group_roles(GROUP_ROLES | {"all-view": [{"role": "viewer"}], "shop-view": [{"role": "viewer",
                                                                                              "projects": ["shop"]}]})  # fmt: skip
    merged = merge_bindings(roles["shop-ops"] + roles["bank-ops"] + roles["shop-view"] + roles["all-view"])
    assert merged == (RoleBinding("operator", frozenset({"shop", "bank"})), RoleBinding("viewer", None))
    with pytest.raises(CloudtapError, match="group_roles\\['x'\\]"):
        parse_group_roles({"x": [{"role": "superuser"}]})
    assert check_url("https://idp.example/realms/x", "issuer") and check_url(
        "http://127.0.0.1:8080", "issuer"
    )
    with pytest.raises(CloudtapError, match="https"):
        check_url("http://idp.example", "auth.oidc.issuer")


def test_pending_logins_expire_and_are_used_once() -> None:
    from cloudtap.server.access.oidc import Pending

    now = [1000.0]
    pending = PendingLogins(ttl_s=600, limit=2, clock=lambda: now[0])

    def make(state: str) -> Pending:
        return Pending(state, "n", "v", "b", "http://x/cb", "/", now[0] + 600)

    pending.add(make("a"))
    assert pending.take("a") is not None and pending.take("a") is None
    pending.add(make("b"))
    now[0] += 601
    assert pending.take("b") is None
    for s in ("c", "d", "e"):
        pending.add(make(s))
    assert len(pending) == 2 and pending.take("c") is None and pending.take("e") is not None

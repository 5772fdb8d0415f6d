"""Users, API tokens and browser sessions in PostgreSQL (``controller.database_url``): two server processes
behind one address share them, and a revocation or a disabled user takes effect through both at once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from access_helpers import PASSWORD
from cloudtap.server.access.db_postgres import AccessPostgresDB
from cloudtap.server.access.principal import RoleBinding
from cloudtap.server.access.service import AccessService, AuthError
from cloudtap.server.api.app import create_app
from cloudtap.server.settings import ServerSettings
from postgres_cluster import postgres_cluster, postgres_url  # noqa: F401 - fixtures


def settings(tmp: Path, url: str) -> ServerSettings:
    tmp.mkdir(parents=True, exist_ok=True)
    return ServerSettings.model_validate({
        "inventory": {"enabled": False},
        "controller": {"database_url": url, "db_path": str(tmp / "unused.sqlite")},
        "auth": {"db_path": str(tmp / "access.sqlite"), "audit_log": str(tmp / "audit.jsonl")},
    })  # fmt: skip


@pytest.fixture
def servers(tmp_path: Path, postgres_url: str) -> Iterator[tuple[TestClient, TestClient]]:  # noqa: F811
    a = create_app(settings(tmp_path / "a", postgres_url), None)
    b = create_app(settings(tmp_path / "b", postgres_url), None)
    with TestClient(a, base_url="https://testserver") as ca, TestClient(b, base_url="https://testserver") as cb:
        yield ca, cb
    assert not (tmp_path / "a" / "access.sqlite").exists() and not (tmp_path / "b" / "access.sqlite").exists()


def test_a_token_made_through_one_server_works_through_the_other_until_revoked(
    servers: tuple[TestClient, TestClient],
) -> None:
    a, b = servers
    a.app.state.access.add_user("ops", PASSWORD, [RoleBinding("operator", None)])
    token = a.app.state.access.issue_token("ops", "cli")
    headers = {"Authorization": f"Bearer {token.token}"}
    who = b.get("/api/v1/auth/me", headers=headers)
    assert who.status_code == 200, who.text
    assert who.json()["name"] == "ops"
    b.app.state.access.revoke_token(token.id)
    assert a.get("/api/v1/auth/me", headers=headers).status_code == 401


def test_a_browser_session_started_on_one_server_is_valid_on_the_other(servers: tuple[TestClient, TestClient]) -> None:
    a, b = servers
    a.app.state.access.add_user("viewer1", PASSWORD, [RoleBinding("viewer", frozenset({"shop"}))])
    login = a.post("/api/v1/auth/login", json={"username": "viewer1", "password": PASSWORD})
    assert login.status_code == 200, login.text
    for name, value in a.cookies.items():
        b.cookies.set(name, value)
    who = b.get("/api/v1/auth/me")
    assert who.status_code == 200, who.text
    assert who.json()["name"] == "viewer1"
    a.app.state.access.set_disabled("viewer1", True)  # disabling through A ends the session on B
    assert b.get("/api/v1/auth/me").status_code == 401


def test_two_connections_see_one_set_of_users(postgres_url: str) -> None:  # noqa: F811
    one, two = AccessService(AccessPostgresDB(postgres_url)), AccessService(AccessPostgresDB(postgres_url))
    try:
        one.add_user("admin1", PASSWORD, [RoleBinding("admin", None)])
        with pytest.raises(AuthError) as taken:
            two.add_user("admin1", PASSWORD, [RoleBinding("admin", None)])
        assert taken.value.status == 409
        assert two.has_users() and two.login("admin1", PASSWORD).name == "admin1"
        two.set_password("admin1", PASSWORD + " again")
        with pytest.raises(AuthError):
            one.login("admin1", PASSWORD)
    finally:
        one.db.close()
        two.db.close()


def test_servers_starting_together_make_one_first_admin(tmp_path: Path, postgres_url: str) -> None:  # noqa: F811
    from cloudtap.server.access.bootstrap import ensure_admin

    first = create_app(settings(tmp_path / "a", postgres_url), None)
    second = create_app(settings(tmp_path / "b", postgres_url), None)
    assert second.state.access.has_users() is False
    generated = ensure_admin(first.state.access, first.state.settings.auth)
    second.state.access.has_users = lambda: False  # both looked before either created it
    assert ensure_admin(second.state.access, second.state.settings.auth) is None
    assert generated and second.state.access.login("admin", generated).name == "admin"

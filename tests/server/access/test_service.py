"""AccessService: users, argon2id passwords, tokens (hashed, named, expiring, revocable), sessions."""

from __future__ import annotations

import pytest

from cloudtap.server.access.db import AccessDB
from cloudtap.server.access.principal import RoleBinding
from cloudtap.server.access.service import AccessService, AuthError

PASSWORD = "correct horse battery"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def access(tmp_path, clock: Clock) -> AccessService:  # type: ignore[no-untyped-def]
    return AccessService(AccessDB(tmp_path / "access.sqlite"), session_ttl_s=3600, token_days=30, clock=clock)


def test_passwords_are_argon2id_and_never_stored_in_clear(access: AccessService, tmp_path) -> None:  # type: ignore[no-untyped-def]
    access.add_user("alice", PASSWORD, [RoleBinding("viewer")])
    row = access.db.one("SELECT password_hash FROM users WHERE name = 'alice'")
    assert row is not None and row["password_hash"].startswith("$argon2id$")
    assert PASSWORD.encode() not in (tmp_path / "access.sqlite").read_bytes()
    assert (tmp_path / "access.sqlite").stat().st_mode & 0o077 == 0
    assert access.login("alice", PASSWORD).name == "alice"
    with pytest.raises(AuthError) as wrong:
        access.login("alice", "not the password")
    with pytest.raises(AuthError) as unknown:
        access.login("nobody", PASSWORD)
    assert wrong.value.status == unknown.value.status == 401
    assert wrong.value.reason == unknown.value.reason  # an unknown user is not told apart


def test_weak_password_and_bad_name_are_refused(access: AccessService) -> None:
    with pytest.raises(ValueError, match="at least"):
        access.add_user("bob", "short", [])
    with pytest.raises(ValueError, match="user name"):
        access.add_user("../etc", PASSWORD, [])
    access.add_user("bob", PASSWORD, [])
    with pytest.raises(AuthError) as taken:
        access.add_user("bob", PASSWORD, [])
    assert taken.value.status == 409


def test_token_is_shown_once_stored_hashed_and_expires(access: AccessService, clock: Clock) -> None:
    access.add_user("ops", PASSWORD, [RoleBinding("operator", frozenset({"shop"}))])
    issued = access.issue_token("ops", "ci", days=1)
    assert issued.token.startswith(f"ct_{issued.id}_")
    stored = access.db.one("SELECT digest FROM tokens WHERE id = ?", (issued.id,))
    assert stored is not None and issued.token.split("_", 2)[2] not in stored["digest"]
    principal = access.verify_token(issued.token)
    assert principal.name == "ops" and principal.token_id == issued.id and principal.via == "token"
    assert [t["name"] for t in access.tokens("ops")] == ["ci"]
    assert "digest" not in access.tokens("ops")[0]
    with pytest.raises(AuthError, match="unknown or wrong"):
        access.verify_token(issued.token[:-1] + ("A" if issued.token[-1] != "A" else "B"))
    clock.now += 86_401
    with pytest.raises(AuthError, match="expired"):
        access.verify_token(issued.token)


def test_revoked_token_and_disabled_user_stop_working(access: AccessService) -> None:
    access.add_user("eve", PASSWORD, [RoleBinding("viewer")])
    first, second = access.issue_token("eve", "a"), access.issue_token("eve", "b")
    access.revoke_token(first.id)
    with pytest.raises(AuthError, match="revoked"):
        access.verify_token(first.token)
    assert access.verify_token(second.token).name == "eve"
    access.set_disabled("eve", True)
    with pytest.raises(AuthError, match="disabled"):
        access.verify_token(second.token)
    with pytest.raises(AuthError):
        access.login("eve", PASSWORD)


def test_sessions_expire_and_end_with_a_password_change(access: AccessService, clock: Clock) -> None:
    access.add_user("carol", PASSWORD, [RoleBinding("admin")])
    session = access.start_session(access.login("carol", PASSWORD))
    principal, csrf_digest = access.verify_session(session.secret)
    assert principal.name == "carol" and csrf_digest != session.csrf  # only the digest is kept
    access.set_password("carol", "another long password")
    with pytest.raises(AuthError):
        access.verify_session(session.secret)
    again = access.start_session(access.login("carol", "another long password"))
    clock.now += 3601
    with pytest.raises(AuthError, match="expired"):
        access.verify_session(again.secret)


def test_external_users_cannot_take_over_local_accounts(access: AccessService) -> None:
    access.add_user("dave", PASSWORD, [RoleBinding("viewer")])
    with pytest.raises(AuthError) as refused:
        access.upsert_external_user("dave", "oidc", [RoleBinding("admin")])
    assert refused.value.status == 403
    sso = access.upsert_external_user("frank", "oidc", [RoleBinding("operator", frozenset({"shop"}))])
    assert sso.projects_for  # a principal with the mapped bindings
    assert access.user("frank")["source"] == "oidc"

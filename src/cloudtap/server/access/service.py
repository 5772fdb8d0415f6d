"""AccessService: users, role bindings, API tokens and browser sessions; who a credential belongs to.

Everything that changes who may do what, and every failed login, is written to the audit log by the
caller (the routes), which knows the acting principal.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any

from cloudtap.server.access.credentials import (
    check_password_strength,
    digest,
    hash_password,
    make_token,
    new_id,
    new_secret,
    same,
    split_token,
    verify_password,
)
from cloudtap.server.access.db import AccessDB
from cloudtap.server.access.principal import Principal, RoleBinding

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,127}$")
DAY = 86_400.0


class AuthError(Exception):
    """A credential is missing, wrong, expired or disabled (HTTP ``status``: 401 or 403), or a bad request (400/404/409)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class IssuedToken:
    """A new API token: ``token`` is shown once and never stored."""

    token: str
    id: str
    name: str
    user: str
    expires_at: float


@dataclass(frozen=True)
class Session:
    """A browser session: the cookie secret, its CSRF token and when it ends."""

    secret: str
    csrf: str
    expires_at: float


def check_user_name(name: str) -> str:
    """``name`` if it is a valid user name, else ValueError."""
    if not _NAME_RE.match(name):
        raise ValueError(f"user name {name!r}: letters, digits and _.@+- only, at most 128, not starting with a symbol")
    return name


def _bindings(doc: str) -> tuple[RoleBinding, ...]:
    return tuple(RoleBinding.parse(b) for b in json.loads(doc))


class AccessService:
    """Users, tokens and sessions over an :class:`AccessDB`.

    Args:
        db: the store.
        session_ttl_s: how long a browser session lives.
        token_days: default lifetime of a new API token.
        clock: seconds since the epoch (tests pin it).
    """

    def __init__(self, db: AccessDB, session_ttl_s: float = 8 * 3600, token_days: float = 90,
                 clock: Any = time.time) -> None:  # fmt: skip
        self.db = db
        self.session_ttl_s = session_ttl_s
        self.token_days = token_days
        self.clock = clock

    # -- users -----------------------------------------------------------------------------------
    def has_users(self) -> bool:
        """True once any user exists."""
        return self.db.one("SELECT 1 AS x FROM users LIMIT 1") is not None

    def add_user(self, name: str, password: str | None, bindings: list[RoleBinding], source: str = "local") -> dict[str, Any]:
        """Create a user (409 if the name is taken); a local user needs a password."""
        check_user_name(name)
        if source == "local":
            check_password_strength(password or "")
        now = self.clock()
        hashed = hash_password(password) if password else None
        doc = json.dumps([b.to_doc() for b in bindings])
        changed = self.db.execute(
            "INSERT INTO users (name, password_hash, bindings, source, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING", (name, hashed, doc, source, now, now))  # fmt: skip
        if not changed:
            raise AuthError(409, f"user {name!r} exists")
        return self.user(name)

    def user(self, name: str) -> dict[str, Any]:
        """One user, without secrets (404 when unknown)."""
        row = self.db.one("SELECT * FROM users WHERE name = ?", (name,))
        if row is None:
            raise AuthError(404, f"no user {name!r}")
        return _public_user(row)

    def users(self) -> list[dict[str, Any]]:
        """Every user, without secrets."""
        return [_public_user(r) for r in self.db.all("SELECT * FROM users ORDER BY name")]

    def set_password(self, name: str, password: str) -> None:
        """Replace a user's password; their sessions end."""
        check_password_strength(password)
        self.user(name)
        self.db.execute("UPDATE users SET password_hash = ?, updated_at = ? WHERE name = ?",
                        (hash_password(password), self.clock(), name))  # fmt: skip
        self.db.execute("DELETE FROM sessions WHERE user_name = ?", (name,))

    def set_bindings(self, name: str, bindings: list[RoleBinding]) -> dict[str, Any]:
        """Replace a user's role bindings."""
        self.user(name)
        doc = json.dumps([b.to_doc() for b in bindings])
        self.db.execute("UPDATE users SET bindings = ?, updated_at = ? WHERE name = ?", (doc, self.clock(), name))
        return self.user(name)

    def set_disabled(self, name: str, disabled: bool) -> dict[str, Any]:
        """Disable (sessions end, tokens stop working) or enable a user."""
        self.user(name)
        self.db.execute("UPDATE users SET disabled = ?, updated_at = ? WHERE name = ?",
                        (int(disabled), self.clock(), name))  # fmt: skip
        if disabled:
            self.db.execute("DELETE FROM sessions WHERE user_name = ?", (name,))
        return self.user(name)

    def upsert_external_user(self, name: str, source: str, bindings: list[RoleBinding]) -> Principal:
        """A user from single sign-on: created or updated with the bindings its groups map to."""
        check_user_name(name)
        now = self.clock()
        doc = json.dumps([b.to_doc() for b in bindings])
        row = self.db.one("SELECT * FROM users WHERE name = ?", (name,))
        if row is None:
            self.db.execute("INSERT INTO users (name, password_hash, bindings, source, created_at, updated_at, "
                            "last_login) VALUES (?, NULL, ?, ?, ?, ?, ?)", (name, doc, source, now, now, now))  # fmt: skip
        elif row["source"] != source:
            raise AuthError(403, f"user {name!r} is a {row['source']} account, not one of {source}")
        elif row["disabled"]:
            raise AuthError(403, f"user {name!r} is disabled")
        else:
            self.db.execute("UPDATE users SET bindings = ?, updated_at = ?, last_login = ? WHERE name = ?",
                            (doc, now, now, name))  # fmt: skip
        return Principal(name, source, tuple(bindings))

    # -- authentication --------------------------------------------------------------------------
    def login(self, name: str, password: str) -> Principal:
        """The user if the password is right and the account enabled; else 401 (same answer either way)."""
        row = self.db.one("SELECT * FROM users WHERE name = ?", (name,))
        ok = verify_password(row["password_hash"] if row else None, password)
        if row is None or not ok or row["disabled"]:
            raise AuthError(401, "wrong user name or password, or the account is disabled")
        self.db.execute("UPDATE users SET last_login = ? WHERE name = ?", (self.clock(), name))
        return Principal(name, "password", _bindings(row["bindings"]))

    def _principal(self, name: str, via: str, token_id: str | None = None) -> Principal:
        row = self.db.one("SELECT bindings, disabled FROM users WHERE name = ?", (name,))
        if row is None or row["disabled"]:
            raise AuthError(401, "the account behind this credential is disabled or gone")
        return Principal(name, via, _bindings(row["bindings"]), token_id)

    # -- API tokens ------------------------------------------------------------------------------
    def issue_token(self, user: str, name: str, days: float | None = None) -> IssuedToken:
        """A new API token for ``user`` (shown once), valid ``days`` (default ``token_days``)."""
        self.user(user)
        if not name or len(name) > 128:
            raise AuthError(400, "a token needs a name of 1 to 128 characters")
        lifetime = self.token_days if days is None else days
        if not 0 < lifetime <= 3650:
            raise AuthError(400, "a token lives between a moment and 3650 days")
        token_id, secret = new_id(), new_secret()
        now = self.clock()
        expires = now + lifetime * DAY
        self.db.execute("INSERT INTO tokens (id, user_name, name, digest, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
                        (token_id, user, name, digest(secret), now, expires))  # fmt: skip
        return IssuedToken(make_token(token_id, secret), token_id, name, user, expires)

    def tokens(self, user: str | None = None) -> list[dict[str, Any]]:
        """Tokens (never their secrets), of one user or everyone's."""
        sql = "SELECT id, user_name AS user, name, created_at, expires_at, revoked_at, last_used FROM tokens"
        if user is not None:
            return self.db.all(sql + " WHERE user_name = ? ORDER BY created_at", (user,))
        return self.db.all(sql + " ORDER BY user_name, created_at")

    def token_owner(self, token_id: str) -> str:
        """Who owns a token (404 when unknown)."""
        row = self.db.one("SELECT user_name FROM tokens WHERE id = ?", (token_id,))
        if row is None:
            raise AuthError(404, f"no token {token_id!r}")
        return str(row["user_name"])

    def revoke_token(self, token_id: str) -> None:
        """Revoke a token now."""
        self.token_owner(token_id)
        self.db.execute("UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at = 0", (self.clock(), token_id))

    def verify_token(self, token: str) -> Principal:
        """The principal behind an API token; 401 when unknown, wrong, revoked or expired."""
        parts = split_token(token)
        row = self.db.one("SELECT * FROM tokens WHERE id = ?", (parts[0],)) if parts else None
        if parts is None or row is None or not same(digest(parts[1]), row["digest"]):
            raise AuthError(401, "unknown or wrong API token")
        now = self.clock()
        if row["revoked_at"]:
            raise AuthError(401, f"API token {row['id']} was revoked")
        if row["expires_at"] <= now:
            raise AuthError(401, f"API token {row['id']} expired")
        if now - row["last_used"] > 60:  # at most one write a minute per token
            self.db.execute("UPDATE tokens SET last_used = ? WHERE id = ?", (now, row["id"]))
        return self._principal(row["user_name"], "token", row["id"])

    # -- browser sessions ------------------------------------------------------------------------
    def start_session(self, principal: Principal) -> Session:
        """A new session for a user who just logged in (password or SSO)."""
        session_id, secret, csrf = new_id(), new_secret(), new_secret(18)
        now = self.clock()
        expires = now + self.session_ttl_s
        self.db.execute("DELETE FROM sessions WHERE expires_at <= ?", (now,))
        self.db.execute("INSERT INTO sessions (id, digest, user_name, via, csrf, created_at, expires_at) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (session_id, digest(secret), principal.name, principal.via, digest(csrf), now, expires))  # fmt: skip
        return Session(f"{session_id}.{secret}", csrf, expires)

    def verify_session(self, cookie: str) -> tuple[Principal, str]:
        """``(principal, csrf digest)`` of a live session cookie; 401 otherwise."""
        session_id, _, secret = cookie.partition(".")
        row = self.db.one("SELECT * FROM sessions WHERE id = ?", (session_id,)) if secret else None
        if row is None or not same(digest(secret), row["digest"]):
            raise AuthError(401, "no such session: log in again")
        if row["expires_at"] <= self.clock():
            raise AuthError(401, "the session expired: log in again")
        return self._principal(row["user_name"], "session"), str(row["csrf"])

    def end_session(self, cookie: str) -> None:
        """Log out: the session is gone."""
        session_id, _, secret = cookie.partition(".")
        row = self.db.one("SELECT digest FROM sessions WHERE id = ?", (session_id,))
        if row is not None and same(digest(secret), row["digest"]):
            self.db.execute("DELETE FROM sessions WHERE id = ?", (session_id,))


def _public_user(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": row["name"],
        "source": row["source"],
        "disabled": bool(row["disabled"]),
        "bindings": json.loads(row["bindings"]),
        "created_at": row["created_at"],
        "last_login": row["last_login"] or None,
    }

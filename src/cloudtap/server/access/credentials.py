"""Secrets: random tokens, their stored digests, constant-time checks, and argon2id password hashes.

API tokens read ``ct_<id>_<secret>``: the id finds the row, the secret's SHA-256 is compared in
constant time. Only digests are stored; the token is shown once.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets as _random

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_HASHER = PasswordHasher()  # argon2id, the library's current defaults (RFC 9106 low-memory profile)
#: A hash to verify against when the user does not exist, so timing does not tell.
_DUMMY_HASH = _HASHER.hash("cloudtap: no such user")
MIN_PASSWORD = 10


def new_id(nbytes: int = 6) -> str:
    """A short random identifier (hex)."""
    return _random.token_hex(nbytes)


def new_secret(nbytes: int = 32) -> str:
    """A URL-safe random secret of ``nbytes`` bytes of entropy."""
    return _random.token_urlsafe(nbytes)


def digest(secret: str) -> str:
    """The stored form of a high-entropy secret (SHA-256, hex)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def same(a: str | None, b: str | None) -> bool:
    """Constant-time equality of two secrets or digests (None equals nothing)."""
    if a is None or b is None:
        return False
    return hmac.compare_digest(a.encode(), b.encode())


def make_token(token_id: str, secret: str) -> str:
    """The token a client sends."""
    return f"ct_{token_id}_{secret}"


def split_token(token: str) -> tuple[str, str] | None:
    """``(id, secret)`` of a token of ours, else None."""
    if not token.startswith("ct_"):
        return None
    token_id, sep, secret = token[3:].partition("_")
    if not sep or not token_id or not secret:
        return None
    return token_id, secret


def check_password_strength(password: str) -> None:
    """ValueError when a new password is too weak to accept."""
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"a password needs at least {MIN_PASSWORD} characters")


def hash_password(password: str) -> str:
    """argon2id hash of a password."""
    return _HASHER.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    """True when ``password`` matches ``stored`` (spends the same time when there is no user)."""
    try:
        return _HASHER.verify(stored or _DUMMY_HASH, password) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False

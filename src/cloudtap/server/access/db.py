"""AccessDB: users, API tokens and browser sessions in SQLite (WAL), beside the controller's state.

Passwords are argon2id hashes; tokens and sessions are stored as SHA-256 digests of their secrets.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from cloudtap.server.sqlite_file import open_sqlite

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    password_hash TEXT,
    bindings TEXT NOT NULL DEFAULT '[]',
    source TEXT NOT NULL DEFAULT 'local',
    disabled INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    last_login REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    user_name TEXT NOT NULL,
    name TEXT NOT NULL,
    digest TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    revoked_at REAL NOT NULL DEFAULT 0,
    last_used REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS tokens_user ON tokens (user_name);
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    digest TEXT NOT NULL,
    user_name TEXT NOT NULL,
    via TEXT NOT NULL,
    csrf TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
"""


class AccessDB:
    """A thread-safe SQLite connection holding users, tokens and sessions.

    Args:
        path: database file (created 0600 with its directory); ``":memory:"`` for tests.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._conn = open_sqlite(self.path, SCHEMA)
        self._lock = threading.RLock()

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        """Run one statement; returns the number of rows it changed."""
        with self._lock:
            return self._conn.execute(sql, params).rowcount

    def one(self, sql: str, params: tuple[Any, ...] = ()) -> dict[str, Any] | None:
        """The first row as a dict, or None."""
        with self._lock:
            row = self._conn.execute(sql, params).fetchone()
        return dict(row) if row is not None else None

    def all(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        """Every row as a dict."""
        with self._lock:
            return [dict(r) for r in self._conn.execute(sql, params).fetchall()]

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()

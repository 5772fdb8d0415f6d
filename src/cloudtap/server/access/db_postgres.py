"""AccessPostgresDB: users, API tokens and browser sessions in PostgreSQL, shared by several server processes.

Used when ``controller.database_url`` is set, so a user, a token or a browser session made through one server
process works through every other one behind the same address (and a revocation or a disabled user takes
effect everywhere at once: nothing is cached). Same tables and statements as the SQLite backend
(:mod:`~cloudtap.server.access.db`); statements are written with ``?`` placeholders and portable SQL
(``ON CONFLICT``), translated to psycopg's ``%s`` here. The URL may hold a password: only ``describe`` is logged.
"""

from __future__ import annotations

import threading
from typing import Any

import psycopg
from psycopg.rows import dict_row

from cloudtap.errors import ConfigError
from cloudtap.server.controller.db_postgres import describe

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    password_hash TEXT,
    bindings TEXT NOT NULL DEFAULT '[]',
    source TEXT NOT NULL DEFAULT 'local',
    disabled BIGINT NOT NULL DEFAULT 0,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    last_login DOUBLE PRECISION NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    user_name TEXT NOT NULL,
    name TEXT NOT NULL,
    digest TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    revoked_at DOUBLE PRECISION NOT NULL DEFAULT 0,
    last_used DOUBLE PRECISION NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS tokens_user ON tokens (user_name);
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    digest TEXT NOT NULL,
    user_name TEXT NOT NULL,
    via TEXT NOT NULL,
    csrf TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
);
"""
#: ``pg_advisory_xact_lock`` key serialising the schema's creation ("ctac")
SCHEMA_LOCK = 0x63746163


class AccessPostgresDB:
    """A thread-safe PostgreSQL connection holding users, tokens and sessions (the :class:`AccessDB` interface).

    Raises:
        ConfigError: the database cannot be reached (the message names it without its password).
    """

    def __init__(self, url: str) -> None:
        self.path = describe(url)
        try:
            self._conn = psycopg.connect(url, autocommit=True, row_factory=dict_row)
        except psycopg.Error as exc:
            raise ConfigError(f"access state: cannot connect to {self.path}: {exc}") from None
        self._lock = threading.RLock()
        with self._lock, self._conn.transaction():
            self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            self._conn.execute(SCHEMA)

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        """Run one statement; returns the number of rows it changed."""
        with self._lock:
            return self._conn.execute(_placeholders(sql), params).rowcount

    def one(self, sql: str, params: tuple[Any, ...] = ()) -> dict[str, Any] | None:
        """The first row as a dict, or None."""
        with self._lock:
            row: dict[str, Any] | None = self._conn.execute(_placeholders(sql), params).fetchone()
        return row

    def all(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        """Every row as a dict."""
        with self._lock:
            return list(self._conn.execute(_placeholders(sql), params).fetchall())

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()


def _placeholders(sql: str) -> str:
    """``?`` placeholders as psycopg's ``%s`` (the access statements hold no literal ``?`` or ``%``)."""
    return sql.replace("%", "%%").replace("?", "%s")

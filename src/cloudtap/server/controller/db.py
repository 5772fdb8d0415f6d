"""ControllerDB: the controller's state (agents, groups, policies) in SQLite, WAL mode; :class:`StateDB`,
what the controller needs of any backend; :func:`open_controller_db` picks SQLite or PostgreSQL.

Flows live in ClickHouse/chDB; this small, transactional state does not belong there. The file holds
the agents' control keys (the server sends them), so it is created 0600. Columns added since the
first release are added to an existing database at open (:data:`ADDED_COLUMNS`). With PostgreSQL
(``controller.database_url``, :mod:`~cloudtap.server.controller.db_postgres`) several server processes
share the state; each keeps its in-memory view fresh through :meth:`StateDB.subscribe`.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Protocol

from cloudtap.server.sqlite_file import open_sqlite

#: called with the change's detail (e.g. an agent id; "" = anything may have changed)
Listener = Callable[[str], None]
#: topics a shared backend announces: agents (identity, group, config), agents_seen (last_seen, status),
#: groups, policies, commands (detail: the agent id), distribution (destinations and distribution policies)
TOPICS = ("agents", "agents_seen", "groups", "policies", "commands", "distribution")


class Cursorish(Protocol):
    """What :meth:`StateDB.transaction` yields."""

    def execute(self, sql: str, params: Any = ..., /) -> Any: ...
    def executemany(self, sql: str, rows: Any, /) -> Any: ...


class StateDB(Protocol):
    """The controller's storage: SQL with ``?`` placeholders, portable between SQLite and PostgreSQL."""

    #: True when other server processes share it (PostgreSQL): in-memory views must follow :meth:`subscribe`
    shared: bool

    def transaction(self) -> AbstractContextManager[Cursorish]: ...
    def execute(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ...) -> None: ...
    def rows(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ...) -> list[dict[str, Any]]: ...
    def subscribe(self, topic: str, listener: Listener) -> None: ...
    def close(self) -> None: ...


def open_controller_db(target: str | Path) -> StateDB:
    """PostgreSQL for a ``postgresql://`` URL (the schema created or migrated), else a SQLite file
    (``":memory:"`` for tests)."""
    text = str(target)
    if text.startswith(("postgresql://", "postgres://")):
        from cloudtap.server.controller.db_postgres import PostgresDB

        return PostgresDB(text)
    return ControllerDB(target)

SCHEMA = """
CREATE TABLE IF NOT EXISTS agents (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    hostname TEXT NOT NULL,
    machine_id TEXT NOT NULL,
    address TEXT NOT NULL DEFAULT '',
    group_name TEXT NOT NULL DEFAULT 'default',
    version TEXT NOT NULL DEFAULT '',
    mode TEXT NOT NULL DEFAULT '',
    heartbeat_s REAL NOT NULL DEFAULT 10,
    registered_at REAL NOT NULL,
    last_seen REAL NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT '{}',
    config_version INTEGER NOT NULL DEFAULT 0,
    config_hash TEXT NOT NULL DEFAULT '',
    config_doc TEXT NOT NULL DEFAULT '{}',
    credential_digest TEXT NOT NULL DEFAULT '',
    control_key TEXT NOT NULL DEFAULT '',
    credential_at REAL NOT NULL DEFAULT 0,
    control_url TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS groups (
    name TEXT PRIMARY KEY,
    description TEXT NOT NULL DEFAULT '',
    overlay TEXT NOT NULL DEFAULT '{}',
    version INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS policies (
    name TEXT PRIMARY KEY,
    doc TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS distribution (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    doc TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (kind, name)
);
"""
#: columns newer than the first schema: ``(table, column, declaration)``, added when missing
ADDED_COLUMNS = (
    ("agents", "credential_digest", "TEXT NOT NULL DEFAULT ''"),  #: SHA-256 of the agent's credential secret
    ("agents", "control_key", "TEXT NOT NULL DEFAULT ''"),  #: the key the server sends to the agent
    ("agents", "credential_at", "REAL NOT NULL DEFAULT 0"),  #: when both were issued
    ("agents", "control_url", "TEXT NOT NULL DEFAULT ''"),  #: the last control URL that passed the checks
)


class ControllerDB:
    """A thread-safe SQLite connection holding the controller's state (one process: nothing to announce).

    Args:
        path: database file (created with its directory); ``":memory:"`` for tests.
    """

    shared = False

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._conn = open_sqlite(self.path, SCHEMA)
        self._lock = threading.RLock()
        with self._lock:
            self._migrate()

    def _migrate(self) -> None:
        """Add the columns an older database lacks (``ALTER TABLE ... ADD COLUMN``: existing rows get the default)."""
        for table, column, declaration in ADDED_COLUMNS:
            present = {r["name"] for r in self._conn.execute(f"PRAGMA table_info({table})").fetchall()}
            if column not in present:
                self._conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (serialised across threads)."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def execute(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> None:
        """Run one statement (autocommit)."""
        with self._lock:
            self._conn.execute(sql, params)

    def rows(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> list[dict[str, Any]]:
        """All rows of a query as dicts."""
        with self._lock:
            return [dict(r) for r in self._conn.execute(sql, params).fetchall()]

    def subscribe(self, topic: str, listener: Listener) -> None:
        """Nothing to follow: this process is the only writer."""

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()


def dumps(obj: Any) -> str:
    """Canonical JSON (sorted keys): equal documents give equal text and hashes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)

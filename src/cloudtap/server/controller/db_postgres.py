"""PostgresDB: the controller's state in PostgreSQL, shared by several server processes.

Same tables as the SQLite backend (:mod:`~cloudtap.server.controller.db`), times as ``DOUBLE PRECISION``, plus
``commands`` (the queue every process delivers from). Triggers announce every change on the channel
:data:`CHANNEL` (payload ``topic`` or ``topic:detail``), which :class:`~.pg_listener.PgListener` turns into
:meth:`PostgresDB.subscribe` calls. The schema is created or migrated at open under an advisory lock, so
processes starting together do not collide. The URL may hold a password: only :func:`describe` is logged.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row

from cloudtap.server.controller.db import ADDED_COLUMNS, Listener
from cloudtap.server.controller.pg_listener import PgListener

log = logging.getLogger(__name__)

CHANNEL = "cloudtap_state"
#: ``pg_advisory_xact_lock`` key serialising schema changes ("ctap")
SCHEMA_LOCK = 0x63746170
#: columns whose change is topic ``agents`` (identity, group, config); ``last_seen``/``status`` are ``agents_seen``
AGENT_COLUMNS = ("name", "hostname", "machine_id", "address", "group_name", "version", "mode", "heartbeat_s",
                 "config_version", "config_hash", "config_doc", "credential_digest", "control_key", "credential_at",
                 "control_url")  # fmt: skip

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS agents (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    hostname TEXT NOT NULL,
    machine_id TEXT NOT NULL,
    address TEXT NOT NULL DEFAULT '',
    group_name TEXT NOT NULL DEFAULT 'default',
    version TEXT NOT NULL DEFAULT '',
    mode TEXT NOT NULL DEFAULT '',
    heartbeat_s DOUBLE PRECISION NOT NULL DEFAULT 10,
    registered_at DOUBLE PRECISION NOT NULL,
    last_seen DOUBLE PRECISION NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT '{{}}',
    config_version BIGINT NOT NULL DEFAULT 0,
    config_hash TEXT NOT NULL DEFAULT '',
    config_doc TEXT NOT NULL DEFAULT '{{}}'
);
CREATE TABLE IF NOT EXISTS groups (
    name TEXT PRIMARY KEY,
    description TEXT NOT NULL DEFAULT '',
    overlay TEXT NOT NULL DEFAULT '{{}}',
    version BIGINT NOT NULL DEFAULT 0,
    updated_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS policies (
    name TEXT PRIMARY KEY,
    doc TEXT NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS distribution (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    doc TEXT NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (kind, name)
);
CREATE TABLE IF NOT EXISTS commands (
    id BIGSERIAL PRIMARY KEY,
    agent_id TEXT NOT NULL,
    action TEXT NOT NULL,
    issued_at DOUBLE PRECISION NOT NULL,
    delivered_at DOUBLE PRECISION,
    done_at DOUBLE PRECISION,
    ok BOOLEAN,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS commands_pending ON commands (agent_id, id) WHERE delivered_at IS NULL;
CREATE OR REPLACE FUNCTION cloudtap_announce() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{CHANNEL}', TG_ARGV[0]);
    RETURN NULL;
END $$;
CREATE OR REPLACE FUNCTION cloudtap_announce_command() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{CHANNEL}', 'commands:' || NEW.agent_id);
    RETURN NULL;
END $$;
"""
#: ``(name, table, event, function call)``: dropped and created again at every open (idempotent)
TRIGGERS = (
    ("cloudtap_agents", "agents", f"INSERT OR DELETE OR UPDATE OF {', '.join(AGENT_COLUMNS)}",
     "FOR EACH STATEMENT EXECUTE FUNCTION cloudtap_announce('agents')"),
    ("cloudtap_agents_seen", "agents", "UPDATE OF last_seen, status",
     "FOR EACH STATEMENT EXECUTE FUNCTION cloudtap_announce('agents_seen')"),
    ("cloudtap_groups", "groups", "INSERT OR DELETE OR UPDATE",
     "FOR EACH STATEMENT EXECUTE FUNCTION cloudtap_announce('groups')"),
    ("cloudtap_policies", "policies", "INSERT OR DELETE OR UPDATE",
     "FOR EACH STATEMENT EXECUTE FUNCTION cloudtap_announce('policies')"),
    ("cloudtap_distribution", "distribution", "INSERT OR DELETE OR UPDATE",
     "FOR EACH STATEMENT EXECUTE FUNCTION cloudtap_announce('distribution')"),
    ("cloudtap_commands", "commands", "INSERT", "FOR EACH ROW EXECUTE FUNCTION cloudtap_announce_command()"),
)  # fmt: skip
#: SQLite declarations of :data:`~.db.ADDED_COLUMNS` -> PostgreSQL's
_TYPES = {"REAL": "DOUBLE PRECISION", "INTEGER": "BIGINT"}


def describe(url: str) -> str:
    """The URL without its password (for logs and errors)."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "postgresql://<unparsable URL>"
    user = f"{parts['user']}@" if parts.get("user") else ""
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"postgresql://{user}{parts.get('host', '')}{port}/{parts.get('dbname', '')}"


@lru_cache(maxsize=512)
def _placeholders(sql: str) -> str:
    """SQLite's ``?`` placeholders as psycopg's ``%s`` (literal ``%`` doubled)."""
    return sql.replace("%", "%%").replace("?", "%s")


def _query(sql: str, params: Any) -> tuple[str, Any]:
    if not params:
        return sql, None
    if isinstance(params, dict):
        raise TypeError("PostgresDB takes positional parameters only ('?')")
    return _placeholders(sql), tuple(params)


class _Tx:
    """A cursor inside :meth:`PostgresDB.transaction` speaking the SQLite dialect's placeholders."""

    def __init__(self, cur: psycopg.Cursor[dict[str, Any]]) -> None:
        self.cur = cur

    def execute(self, sql: str, params: Any = ()) -> psycopg.Cursor[dict[str, Any]]:
        return self.cur.execute(*_query(sql, params))

    def executemany(self, sql: str, rows: Any) -> None:
        self.cur.executemany(_placeholders(sql), [tuple(r) for r in rows])


class PostgresDB:
    """One PostgreSQL connection (thread-safe, reconnected when broken) holding the controller's state.

    Args:
        url: ``postgresql://user:password@host:port/database`` (libpq URL; ``?sslmode=...`` and the like allowed).
    Raises:
        ConnectionError: the server cannot be reached or the schema cannot be created (the password never shows).
    """

    shared = True

    def __init__(self, url: str) -> None:
        self.url = url
        self.path = describe(url)  # what logs and diagnostics may show
        self._lock = threading.RLock()
        self._conn: psycopg.Connection[dict[str, Any]] | None = None
        self._listener: PgListener | None = None
        try:
            self._migrate()
        except psycopg.Error as exc:
            raise ConnectionError(f"controller database {self.path}: {exc}") from None
        log.info("controller: state in PostgreSQL %s (shared by every server process using it)", self.path)

    def _connection(self) -> psycopg.Connection[dict[str, Any]]:
        """The connection, opened again when it was lost (the lock is held)."""
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = psycopg.connect(self.url, autocommit=True, row_factory=dict_row, connect_timeout=10)
        return self._conn

    def _migrate(self) -> None:
        """Create the tables, functions and triggers; add the columns an older schema lacks."""
        with self.transaction() as tx:
            tx.execute("SELECT pg_advisory_xact_lock(?)", (SCHEMA_LOCK,))
            tx.execute(SCHEMA)
            for table, column, declaration in ADDED_COLUMNS:
                kind, _, rest = declaration.partition(" ")
                tx.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {_TYPES.get(kind, kind)} {rest}")
            for name, table, event, call in TRIGGERS:
                tx.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")
                tx.execute(f"CREATE TRIGGER {name} AFTER {event} ON {table} {call}")

    @contextmanager
    def transaction(self) -> Iterator[_Tx]:
        """One transaction (serialised across this process's threads)."""
        with self._lock:
            conn = self._connection()
            with conn.transaction(), conn.cursor() as cur:
                yield _Tx(cur)

    def execute(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> None:
        """Run one statement (autocommit)."""
        with self._lock:
            self._connection().execute(*_query(sql, params))

    def rows(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> list[dict[str, Any]]:
        """All rows of a query (or of an ``... RETURNING``) as dicts."""
        with self._lock:
            cur = self._connection().execute(*_query(sql, params))
            return cur.fetchall() if cur.description is not None else []

    def subscribe(self, topic: str, listener: Listener) -> None:
        """Call ``listener(detail)`` whenever any process changes ``topic`` (see :data:`~.db.TOPICS`), and with
        ``""`` after the notification connection was lost (changes may have been missed)."""
        with self._lock:
            if self._listener is None:
                self._listener = PgListener(self.url, CHANNEL, self.path)
                self._listener.start()
        self._listener.subscribe(topic, listener)

    def close(self) -> None:
        """Stop listening, close the connection."""
        if self._listener is not None:
            self._listener.stop()
        with self._lock:
            if self._conn is not None:
                self._conn.close()

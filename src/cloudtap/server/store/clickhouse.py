"""ClickHouseStore: the FlowStore on ClickHouse, embedded chDB (``chdb:///path``) or a server (``http://``).

The same SQL runs on both; only the connection differs. chDB allows one data path per process (and
one process per path): open one store per path and database, and :meth:`ClickHouseStore.close` it.

Exactly-once: each kind of a batch is inserted as one Arrow block with the deduplication token
``BatchKey.token(kind)``; once every block is in, the batch is recorded in ``ingest_log``. A batch
found in the log is a duplicate and is not inserted again. A batch not in the log is (re)inserted in
full: blocks that made it before a crash are dropped by ClickHouse's block deduplication (the tables
keep the last ``DEDUP_WINDOW`` block tokens), so the replay heals without double counting.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any
from urllib.parse import urlparse

import clickhouse_connect
import pyarrow as pa

from cloudtap.server.store import migrations
from cloudtap.server.store.base import BatchKey, InsertResult
from cloudtap.server.store.ddl import KIND_TABLES, TABLES, DdlContext, ident, quote
from cloudtap.server.store.retention import (
    DroppedPartition,
    RetentionPolicy,
    apply_ttl,
    data_bytes,
    enforce_disk_budget,
)
from cloudtap.server.store.table_fit import insert_columns, prepare_table

#: Settings of every data insert: dependent views deduplicate too, so a crash between a table and its
#: views heals on replay. ``optimize_on_insert=0``: the views already GROUP BY their whole key, so the
#: rollup tables' per-block merge on insert finds nothing to merge and only costs a pass over the
#: block (measured: 18 % more rows per CPU-second for a batch with its views; docs/storage.md).
#: In cluster mode the Distributed insert returns only once the shards have it.
INSERT_SETTINGS = {"deduplicate_blocks_in_dependent_materialized_views": 1, "optimize_on_insert": 0}
_CLUSTER_SETTINGS = {"distributed_foreground_insert": 1}
#: jemalloc settings for embedded chDB (see ``_tune_allocator``).
CHDB_MALLOC_CONF = "dirty_decay_ms:10000,muzzy_decay_ms:10000"
#: One reading thread, and squashing up to the whole table: each kind of a batch stays one block.
_ONE_BLOCK = {"max_threads": 1, "max_insert_threads": 1, "min_insert_block_size_bytes": 0}
_READ_ONLY_START = ("select", "with", "show", "describe", "desc", "explain", "exists", "(")
#: ClickHouse error names that mean the data (not the server) is at fault.
_DATA_ERRORS = ("CANNOT_PARSE", "INCORRECT_DATA", "TYPE_MISMATCH", "CANNOT_CONVERT", "ILLEGAL_COLUMN")


class ClickHouseStore:
    """Flow records and edge metrics in ClickHouse (see docs/storage.md).

    Args:
        dsn: ``chdb:///abs/path`` for embedded chDB (``chdb://`` alone: in memory), or
            ``http(s)://user:password@host:8123`` for a ClickHouse server.
        database: database holding the tables.
        cluster: ClickHouse cluster name: DDL runs ``ON CLUSTER`` with replicated local tables and
            Distributed tables over them.
        retention: TTL per table and disk budget.
    """

    def __init__(
        self,
        dsn: str,
        database: str = "cloudtap",
        cluster: str | None = None,
        retention: RetentionPolicy | None = None,
    ) -> None:
        self.dsn = dsn
        self.database = database
        self.cluster = cluster
        self.retention = retention or RetentionPolicy()
        self.ctx = DdlContext(database, cluster, self.retention.ttl_seconds())
        #: settings of every data insert (``INSERT_SETTINGS``; benchmarks try others here)
        self.insert_settings: dict[str, Any] = dict(INSERT_SETTINGS)
        self.embedded = dsn.startswith("chdb:")
        self._client: Any = _connect(dsn, cluster)
        self._chdb: Any = _connect_in_process(dsn) if self.embedded else None
        self._chdb_lock = threading.Lock()
        self._closed = False
        exists = self._client.command(
            "SELECT count() FROM system.databases WHERE name = {db:String}", parameters={"db": database}
        )
        if int(exists):
            self._client.database = database

    # -- schema ----------------------------------------------------------------------------------
    def migrate(self, target: int | None = None) -> int:
        """Create or upgrade the schema and apply the retention TTLs; returns the version in force."""
        version = migrations.migrate(self._client, self.ctx, migrations.LATEST if target is None else target)
        self._client.database = self.database
        apply_ttl(self._client, self.ctx)
        return version

    def schema_version(self) -> int:
        """Version recorded in ``schema_version`` (0: nothing yet)."""
        return migrations.current_version(self._client, self.ctx)

    # -- ingest ----------------------------------------------------------------------------------
    def insert(self, tables: dict[str, pa.Table], key: BatchKey | None = None) -> InsertResult:
        """Store one batch (``kind`` -> Arrow table), exactly once per ``key``.

        Raises:
            ValueError: a kind is unknown, or a table lacks a required column, has a column of the
                wrong type or nulls in a required column, or holds values ClickHouse cannot parse.
        """
        prepared = {kind: prepare_table(kind, table) for kind, table in tables.items()}
        result = InsertResult(rows={kind: t.num_rows for kind, t in prepared.items()})
        if key is not None and self.is_logged(key):
            result.duplicate = True
            return result
        for kind, table in prepared.items():
            if table.num_rows:
                self._insert_block(kind, table, key)
        if key is not None:
            self._log_batch(key, result.rows)
        return result

    def _insert_block(self, kind: str, table: pa.Table, key: BatchKey | None) -> None:
        """Insert one prepared table as one block (so its dedup token always covers the same rows)."""
        settings: dict[str, Any] = {
            **self.insert_settings,
            **_ONE_BLOCK,
            "min_insert_block_size_rows": table.num_rows,
        }
        settings["max_insert_block_size"] = max(table.num_rows, 1_048_449)
        if key is not None:
            settings["insert_deduplication_token"] = key.token(kind)
        target = self.ctx.table(KIND_TABLES[kind])
        addresses = {c.name for c in TABLES[KIND_TABLES[kind]].columns if c.type == "IPv6"}
        try:
            self._write(target, table, settings, addresses)
        except Exception as exc:
            if any(name in str(exc) for name in _DATA_ERRORS):
                raise ValueError(f"{kind}: rejected by ClickHouse: {_first_line(exc)}") from exc
            raise

    def _write(self, target: str, block: pa.Table, settings: dict[str, Any], addresses: set[str]) -> None:
        """Insert ``block`` into ``target``: from Arrow in place on chDB, as an Arrow stream over HTTP.

        chDB runs ``INSERT ... SELECT FROM Python(block)``: no serialization and no temporary file.
        Addresses are cast explicitly there: that path's implicit conversion turns bad text into ``::``.
        Columns without nulls are declared non-nullable first (see :func:`not_null_fields`).
        """
        if self._chdb is None:
            self._client.insert_arrow(target, block, settings=settings)
            return
        block = not_null_fields(block)
        names = ", ".join(ident(n) for n in block.column_names)
        exprs = ", ".join(
            f"CAST({ident(n)}, 'IPv6')" if n in addresses else ident(n) for n in block.column_names
        )
        clause = ", ".join(f"{k} = {quote(v) if isinstance(v, str) else int(v)}" for k, v in settings.items())
        sql = f"INSERT INTO {target} ({names}) SELECT {exprs} FROM Python(block) SETTINGS {clause}"
        with self._chdb_lock:
            self._chdb.query(sql)

    def is_logged(self, key: BatchKey) -> bool:
        """True when the batch ``key`` is recorded in ``ingest_log``."""
        found = self._client.command(
            f"SELECT count() FROM {self.ctx.local('ingest_log')} WHERE agent_id = {{a:String}} AND seq = {{s:UInt64}}",
            parameters={"a": key.agent_id, "s": key.seq},
        )
        return bool(int(found))

    def _log_batch(self, key: BatchKey, rows: dict[str, int]) -> None:
        log = pa.table(
            {
                "agent_id": pa.array([key.agent_id], pa.string()),
                "seq": pa.array([key.seq], pa.uint64()),
                "kinds": pa.array([list(rows)], pa.list_(pa.string())),
                "rows": pa.array([list(rows.values())], pa.list_(pa.uint64())),
            }
        )
        self._write(
            self.ctx.local("ingest_log"), log, {"insert_deduplication_token": key.token("ingest_log")}, set()
        )

    # -- queries ---------------------------------------------------------------------------------
    def query_arrow(
        self, sql: str, parameters: dict[str, Any] | None = None, settings: dict[str, Any] | None = None
    ) -> pa.Table:
        """Run a read-only query (``SELECT``/``WITH``/``SHOW``/``DESCRIBE``/``EXPLAIN``) and return Arrow.

        Addresses come back as 16-byte ``IPv6`` values; select ``ip_text_sql(col)`` (see ``ddl``) or
        ``IPv6NumToString(col)`` for text. Bind values as ``{name:Type}`` with ``parameters``;
        ``settings`` are query settings (the access layer's ``additional_table_filters``).
        """
        head = sql.lstrip().lower()
        if not head.startswith(_READ_ONLY_START):
            raise ValueError(f"query_arrow runs read-only queries only, got: {sql.strip()[:60]!r}")
        return self._client.query_arrow(sql, parameters=parameters or {}, settings=settings or None)

    def command(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        """Run any statement (admin and tests: ``OPTIMIZE``, ``SYSTEM``...); returns its scalar result."""
        return self._client.command(sql, parameters=parameters or {})

    # -- retention -------------------------------------------------------------------------------
    def set_retention(self, retention: RetentionPolicy) -> list[str]:
        """Adopt a new policy and bring the tables' TTLs to it now; returns the ``ALTER`` statements run."""
        self.retention = retention
        self.ctx = DdlContext(self.database, self.cluster, retention.ttl_seconds())
        return apply_ttl(self._client, self.ctx)

    def data_bytes(self) -> int:
        """Bytes on disk of the data tables (what the disk budget counts), on the fullest host."""
        return data_bytes(self._client, self.ctx)

    def enforce_disk_budget(self, budget_bytes: int | None = None) -> list[DroppedPartition]:
        """Drop the oldest partitions while the data exceeds the budget (default: the policy's)."""
        budget = self.retention.disk_budget_bytes if budget_bytes is None else budget_bytes
        if budget is None:
            return []
        return enforce_disk_budget(self._client, self.ctx, budget)

    # -- lifecycle -------------------------------------------------------------------------------
    def close(self) -> None:
        """Release the connection (for chDB: this client's handle on the data path)."""
        if not self._closed:
            self._closed = True
            if self._chdb is not None:
                self._chdb.close()
            self._client.close()

    def __enter__(self) -> ClickHouseStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _tune_allocator() -> None:
    """Let embedded ClickHouse keep freed memory for 10 s before returning it to the OS.

    With the default (immediate return), every insert re-faults its buffers: measured 2.5x the
    system CPU per inserted row. Only effective before chDB is first loaded, and only when the
    user has not set ``MALLOC_CONF`` (read by chDB's jemalloc).
    """
    if "chdb" not in sys.modules:
        os.environ.setdefault("MALLOC_CONF", CHDB_MALLOC_CONF)


def _connect(dsn: str, cluster: str | None) -> Any:
    settings = dict(_CLUSTER_SETTINGS) if cluster else {}
    if dsn.startswith("chdb:"):
        _tune_allocator()
        return clickhouse_connect.get_client(dsn=dsn, settings=settings)
    if not dsn.startswith(("http://", "https://", "clickhouse://", "clickhouses://")):
        raise ValueError(f"unsupported store DSN {dsn!r}: use chdb:///path or http(s)://host:8123")
    return clickhouse_connect.get_client(dsn=dsn, settings=settings, autogenerate_session_id=False)


def _connect_in_process(dsn: str) -> Any:
    """A second chDB connection on the same engine, for inserts straight from Arrow."""
    import chdb

    parsed = urlparse(dsn)
    location = parsed.netloc or parsed.path
    path = ":memory:" if location in ("", "memory", ":memory:") else os.path.realpath(parsed.path)
    return chdb.connect(path)  # type: ignore[no-untyped-call]


def not_null_fields(block: pa.Table) -> pa.Table:
    """``block`` with each column that holds no null declared non-nullable (same buffers, no copy).

    chDB's ``Python()`` reads a nullable Arrow field as ``Nullable(T)``, and every stored column is ``T``:
    the insert then converts each column, about 30 % of reading a flow block into ``ENGINE = Null``, 2-12 %
    of storing it in ``flow_log`` (docs/storage.md, "Where the insert CPU goes"). A column with nulls stays
    nullable, so it is stored as before (nulls as the column's default).
    """
    schema = block.schema
    fields = [
        field.with_nullable(False) if field.nullable and block.column(i).null_count == 0 else field
        for i, field in enumerate(schema)
    ]
    if fields == list(schema):
        return block
    return pa.Table.from_arrays(block.columns, schema=pa.schema(fields, metadata=schema.metadata))


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0][:300]


def open_store(dsn: str, database: str = "cloudtap", **kwargs: Any) -> ClickHouseStore:
    """Open and migrate a store (convenience for servers and tools)."""
    store = ClickHouseStore(dsn, database, **kwargs)
    try:
        store.migrate()
    except Exception:
        store.close()
        raise
    return store


__all__ = ["ClickHouseStore", "ident", "insert_columns", "open_store", "prepare_table"]

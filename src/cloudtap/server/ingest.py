"""Ingest: a shipped batch (wire format) -> validated Arrow tables -> the store, exactly once.

Kept apart from HTTP so `cloudtap import` and tests use the same path as agents.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from cloudtap.server.ingest_group import PreparedBatch
from cloudtap.server.store.base import KINDS, BatchKey, FlowStore, InsertResult
from cloudtap.server.store.clickhouse import prepare_table
from cloudtap.ship.wire import WireError, decode_batch


class IngestError(ValueError):
    """A batch that can never be stored (malformed, unknown kind, wrong columns): a 4xx, not a retry."""


@dataclass
class IngestStats:
    """Counters of the ingest path."""

    batches: int = 0
    duplicates: int = 0
    rejected: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    last_error: str = ""
    tag_errors: int = 0  #: batches stored untagged because tagging failed (see last_error)


class Ingestor:
    """Decodes and stores batches; serialises writes (chDB is one writer per process)."""

    def __init__(self, store: FlowStore, tagger: Any | None = None) -> None:
        self.store = store
        self.tagger = tagger  #: fills cloud identity ids before insert (``cloudtap.inventory.tagging.Tagger``)
        self.stats = IngestStats()
        self._lock = threading.Lock()

    @property
    def write_lock(self) -> threading.Lock:
        """Held around every store write (chDB is one writer per process)."""
        return self._lock

    def ingest_bytes(self, data: bytes, agent_id: str | None = None, seq: int | None = None) -> InsertResult:
        """Decode one wire batch and store it.

        Args:
            data: the encoded batch.
            agent_id, seq: from the HTTP headers; when given they must match the batch header.

        Raises:
            IngestError: the batch is malformed or does not fit the schema; nothing was stored.
        """
        try:
            batch = decode_batch(data)
        except WireError as exc:
            self._reject(f"malformed batch: {exc}")
        if agent_id is not None and agent_id != batch.agent_id:
            self._reject(f"agent header {agent_id!r} does not match the batch's agent {batch.agent_id!r}")
        if seq is not None and seq != batch.seq:
            self._reject(f"sequence header {seq} does not match the batch's sequence {batch.seq}")
        return self.ingest_tables(batch.tables, BatchKey(batch.agent_id, batch.seq))

    def prepare_bytes(
        self, data: bytes, agent_id: str | None = None, seq: int | None = None, tag: bool = True
    ) -> PreparedBatch:
        """Decode, tag (unless ``tag`` is false) and check one wire batch without storing it (coalesced path).

        Raises:
            IngestError: the batch is malformed or does not fit the schema.
        """
        try:
            batch = decode_batch(data)
        except WireError as exc:
            self._reject(f"malformed batch: {exc}")
        if agent_id is not None and agent_id != batch.agent_id:
            self._reject(f"agent header {agent_id!r} does not match the batch's agent {batch.agent_id!r}")
        if seq is not None and seq != batch.seq:
            self._reject(f"sequence header {seq} does not match the batch's sequence {batch.seq}")
        tables = self._known(batch.tables)
        if tag:
            tables = self.tag(tables)
        try:  # checked here, so one bad batch is refused alone; the store prepares the merged block again
            for kind, table in tables.items():
                prepare_table(kind, table)
        except ValueError as exc:
            self._reject(str(exc))
        return PreparedBatch(BatchKey(batch.agent_id, batch.seq), tables, data)

    def count(self, result: InsertResult) -> None:
        """Count one stored (or duplicate) batch."""
        self.stats.batches += 1
        if result.duplicate:
            self.stats.duplicates += 1
        for kind, n in result.rows.items():
            self.stats.rows[kind] = self.stats.rows.get(kind, 0) + n

    def rejected(self, reason: str) -> None:
        """Count one batch the store refused."""
        self.stats.rejected += 1
        self.stats.last_error = reason

    def ingest_tables(self, tables: dict[str, pa.Table], key: BatchKey | None) -> InsertResult:
        """Store already-decoded tables (``cloudtap import`` path)."""
        tables = self.tag(self._known(tables))
        try:
            with self._lock:
                result = self.store.insert(tables, key)
        except ValueError as exc:  # the store's schema check
            self._reject(str(exc))
        self.count(result)
        return result

    def _known(self, tables: dict[str, pa.Table]) -> dict[str, pa.Table]:
        unknown = sorted(set(tables) - set(KINDS))
        if unknown:
            self._reject(f"unknown stream kind(s) {unknown}; expected {list(KINDS)}")
        return tables

    def tag(self, tables: dict[str, pa.Table]) -> dict[str, pa.Table]:
        """Fill the cloud identity ids (when a tagger is set); on failure the tables go on untagged."""
        if self.tagger is not None:
            try:
                return self.tagger.tag_tables(tables)
            except Exception as exc:  # never lose a batch to tagging: store it untagged, count and report
                self.stats.tag_errors += 1
                self.stats.last_error = f"tagging failed (batch stored untagged): {type(exc).__name__}: {exc}"
        return tables

    def _reject(self, reason: str) -> None:  # -> NoReturn
        self.stats.rejected += 1
        self.stats.last_error = reason
        raise IngestError(reason)

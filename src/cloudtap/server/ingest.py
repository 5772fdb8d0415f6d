"""Ingest: a shipped batch (wire format) -> validated Arrow tables -> the store, exactly once.

Kept apart from HTTP so `cloudtap import` and tests use the same path as agents.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, NoReturn

import pyarrow as pa

from cloudtap.server.ingest_group import PreparedBatch, insert_alone
from cloudtap.server.metrics.distribution import Distribution
from cloudtap.server.store.base import KINDS, BatchKey, FlowStore, InsertResult
from cloudtap.server.store.table_fit import check_table
from cloudtap.ship.frame import BatchHeader, WireError, check_readable, read_header
from cloudtap.ship.wire import WireBatch, decode_batch


class IngestError(ValueError):
    """A batch that can never be stored (malformed, unknown kind, wrong columns): a 4xx, not a retry.

    ``reason`` names the kind of refusal in a few words (the key of ``IngestStats.rejected_by_reason``).
    """

    def __init__(self, message: str, reason: str = "invalid data") -> None:
        super().__init__(message)
        self.reason = reason


#: agents whose refusals are remembered (the oldest is forgotten beyond it: names in headers are free text)
MAX_AGENTS = 4096


@dataclass
class AgentRefusals:
    """Batches of one agent the server refused: how many, why, and the last one (for "why no data?")."""

    count: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)
    last_at: float = 0.0  #: epoch seconds
    last_error: str = ""


@dataclass
class IngestStats:
    """Counters of the ingest path.

    Refusal reasons: the wire's (``malformed``, ``unsupported version``, ``unknown kind``, ``too large``),
    ``agent mismatch``, ``sequence mismatch``, ``bad columns`` (does not fit the store's columns),
    ``refused by store`` (the store rejected the data on insert).
    """

    batches: int = 0
    duplicates: int = 0
    rejected: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)  #: refusals per reason
    #: refusals per agent (the batch's agent, or the one its headers claim), for the VM diagnosis
    rejected_by_agent: dict[str, AgentRefusals] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)  #: rows acknowledged per kind (duplicates included)
    stored_rows: dict[str, int] = field(default_factory=dict)  #: rows newly stored per kind (no duplicates)
    stored_bytes: dict[str, int] = field(default_factory=dict)  #: Arrow bytes newly stored per kind
    wire_bytes: int = 0  #: encoded (compressed) bytes of the batches newly stored
    last_error: str = ""
    tag_errors: int = 0  #: batches (or coalesced members) stored untagged because tagging failed
    throttled: int = 0  #: batches answered 429 (queue full, resend later): not refused, nothing counted above


class Ingestor:
    """Decodes and stores batches; serialises writes (chDB is one writer per process)."""

    def __init__(self, store: FlowStore, tagger: Any | None = None) -> None:
        self.store = store
        self.tagger = tagger  #: fills cloud identity ids before insert (``cloudtap.inventory.tagging.Tagger``)
        self.stats = IngestStats()
        #: seconds of each store write, by path: ``single`` (one batch) or ``coalesced`` (one group)
        self.insert_timings = {"single": Distribution(), "coalesced": Distribution()}
        self._lock = threading.Lock()
        self._counting = threading.Lock()  # the event loop and the writer thread both count

    @property
    def write_lock(self) -> threading.Lock:
        """Held around every store write (chDB is one writer per process)."""
        return self._lock

    def check_header(self, data: bytes, agent_id: str | None = None, seq: int | None = None) -> BatchHeader:
        """Read a frame's header and refuse what this server cannot store, before anything is decoded.

        Raises:
            IngestError: malformed header, unsupported wire or schema version, unknown kind, or a header
                that disagrees with ``agent_id`` / ``seq`` (from HTTP headers); counted.
        """
        try:
            head = read_header(data)
            check_readable(head, KINDS)
        except WireError as exc:
            detail = f"malformed batch: {exc}" if exc.reason == "malformed" else str(exc)
            self._reject(exc.reason, detail, _claimed_agent(data, agent_id))
        self._check_key(head.agent_id, head.seq, agent_id, seq)
        return head

    def ingest_bytes(self, data: bytes, agent_id: str | None = None, seq: int | None = None) -> InsertResult:
        """Decode one wire batch and store it.

        Args:
            data: the encoded batch.
            agent_id, seq: from the HTTP headers; when given they must match the batch header.

        Raises:
            IngestError: the batch is malformed or does not fit the schema; nothing was stored.
        """
        batch = self._decode(data, agent_id, seq)
        return self.ingest_tables(batch.tables, BatchKey(batch.agent_id, batch.seq), wire_bytes=len(data))

    def prepare_bytes(
        self, data: bytes, agent_id: str | None = None, seq: int | None = None, tag: bool = True
    ) -> PreparedBatch:
        """Decode, tag (unless ``tag`` is false) and check one wire batch without storing it (coalesced path).

        Raises:
            IngestError: the batch is malformed or does not fit the schema.
        """
        batch = self._decode(data, agent_id, seq)
        tables = self._known(batch.tables, batch.agent_id)
        if tag:
            tables = self.tag(tables)
        try:  # checked here, so one bad batch is refused alone; the store prepares the merged block again
            for kind, table in tables.items():
                check_table(kind, table)
        except (ValueError, TypeError, pa.ArrowException) as exc:
            self._reject("bad columns", str(exc), batch.agent_id)
        return PreparedBatch(BatchKey(batch.agent_id, batch.seq), tables, data, sum(batch.rows.values()))

    def _decode(self, data: bytes, agent_id: str | None, seq: int | None) -> WireBatch:
        try:  # unknown kinds, versions and decoded sizes are refused before anything is decompressed
            batch = decode_batch(data, KINDS)
        except WireError as exc:
            detail = f"malformed batch: {exc}" if exc.reason == "malformed" else str(exc)
            self._reject(exc.reason, detail, _claimed_agent(data, agent_id))
        self._check_key(batch.agent_id, batch.seq, agent_id, seq)
        return batch

    def _check_key(self, found_agent: str, found_seq: int, agent_id: str | None, seq: int | None) -> None:
        if agent_id is not None and agent_id != found_agent:
            detail = f"agent header {agent_id!r} does not match the batch's agent {found_agent!r}"
            self._reject("agent mismatch", detail, found_agent)
        if seq is not None and seq != found_seq:
            detail = f"sequence header {seq} does not match the batch's sequence {found_seq}"
            self._reject("sequence mismatch", detail, found_agent)

    def count(self, result: InsertResult, tables: dict[str, pa.Table] | None = None, wire_bytes: int = 0) -> None:
        """Count one stored (or duplicate) batch; ``tables`` and ``wire_bytes`` size what a new one added."""
        with self._counting:
            stats = self.stats
            stats.batches += 1
            if result.duplicate:
                stats.duplicates += 1
            for kind, n in result.rows.items():
                stats.rows[kind] = stats.rows.get(kind, 0) + n
                if not result.duplicate:
                    stats.stored_rows[kind] = stats.stored_rows.get(kind, 0) + n
            if not result.duplicate:
                stats.wire_bytes += wire_bytes
                for kind, table in (tables or {}).items():
                    # the buffers' sizes: a decoded batch owns its buffers whole (Table.nbytes, which allows for
                    # slices, took 40x longer: ~0.2 ms per batch on the ingest thread)
                    size = table.get_total_buffer_size()
                    stats.stored_bytes[kind] = stats.stored_bytes.get(kind, 0) + size

    def throttled(self) -> None:
        """Count one batch turned away because the server cannot keep up (429: the agent resends it)."""
        with self._counting:
            self.stats.throttled += 1

    def rejected(self, reason: str, detail: str = "", agent: str | None = None) -> None:
        """Count one batch refused for ``reason`` (a few words); ``detail`` is kept as the last error, and as
        ``agent``'s last refusal when the batch's agent is known."""
        with self._counting:
            self.stats.rejected += 1
            self.stats.rejected_by_reason[reason] = self.stats.rejected_by_reason.get(reason, 0) + 1
            self.stats.last_error = detail or reason
            if agent:
                self._refused_by(agent, reason, detail or reason)

    def _refused_by(self, agent: str, reason: str, detail: str) -> None:
        by_agent = self.stats.rejected_by_agent
        mine = by_agent.pop(agent, None) or AgentRefusals()  # re-inserted: the dict stays oldest-first
        if len(by_agent) >= MAX_AGENTS:
            del by_agent[next(iter(by_agent))]
        mine.count += 1
        mine.by_reason[reason] = mine.by_reason.get(reason, 0) + 1
        mine.last_at, mine.last_error = time.time(), detail
        by_agent[agent] = mine

    def refusals_of(self, agent: str) -> AgentRefusals | None:
        """A copy of ``agent``'s refusals (None: none counted)."""
        with self._counting:
            found = self.stats.rejected_by_agent.get(agent)
            return None if found is None else AgentRefusals(found.count, dict(found.by_reason), found.last_at,
                                                            found.last_error)  # fmt: skip

    def ingest_tables(self, tables: dict[str, pa.Table], key: BatchKey | None, wire_bytes: int = 0) -> InsertResult:
        """Store already-decoded tables (``cloudtap import`` path); ``wire_bytes``: the encoded batch's size."""
        agent = key.agent_id if key is not None else None
        tables = self.tag(self._known(tables, agent))
        with self._lock, self.insert_timings["single"].time():  # with a key, a repeated error is the data's
            try:
                result = self.store.insert(tables) if key is None else insert_alone(self.store, key, tables)
            except ValueError as exc:  # the store's schema check
                result = exc
        if isinstance(result, ValueError):
            self._reject("refused by store", str(result), agent)
        self.count(result, tables, wire_bytes)
        return result

    def _known(self, tables: dict[str, pa.Table], agent: str | None = None) -> dict[str, pa.Table]:
        unknown = sorted(set(tables) - set(KINDS))
        if unknown:
            self._reject("unknown kind", f"unknown stream kind(s) {unknown}; expected {list(KINDS)}", agent)
        return tables

    def tag(self, tables: dict[str, pa.Table]) -> dict[str, pa.Table]:
        """Fill the cloud identity ids (when a tagger is set); on failure the tables go on untagged."""
        if self.tagger is not None:
            try:
                tagged: dict[str, pa.Table] = self.tagger.tag_tables(tables)
                return tagged
            except Exception as exc:  # never lose a batch to tagging: store it untagged, count and report
                self.tag_failed(exc)
        return tables

    def tag_failed(self, exc: Exception, what: str = "batch") -> None:
        """Count tables stored untagged because tagging raised ``exc``."""
        with self._counting:
            self.stats.tag_errors += 1
            self.stats.last_error = f"tagging failed ({what} stored untagged): {type(exc).__name__}: {exc}"

    def _reject(self, reason: str, detail: str, agent: str | None = None) -> NoReturn:
        self.rejected(reason, detail, agent)
        raise IngestError(detail, reason)


def _claimed_agent(data: bytes, agent_id: str | None) -> str | None:
    """The agent a refused batch belongs to: its HTTP header's, else its frame header's when readable."""
    if agent_id:
        return agent_id
    try:
        return read_header(data).agent_id or None
    except WireError:
        return None

"""Store many agents' batches as one block per table, exactly once per (agent_id, seq).

Written against the store's public API only: each merged block is ``store.insert({kind: table},
BatchKey("~group:<digest>", i))`` (so it gets the token ``~group:<digest>:<i>:<kind>`` and its own
``ingest_log`` row), then one ``ingest_log`` block holds a row per member (token
``~group:<digest>:members``). The digest is a hash of the sorted member keys. See docs/shipping.md
("Coalesced ingest") for why a crash anywhere neither loses nor doubles a row.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from cloudtap.server.store.base import KINDS, BatchKey, InsertResult
from cloudtap.server.store.ddl import quote

GROUP_PREFIX = "~group:"


@dataclass
class PreparedBatch:
    """One agent batch, decoded, tagged and checked against the store's columns."""

    key: BatchKey
    tables: dict[str, pa.Table] | None  #: None until decoded (by a decode thread, from the moment it arrives)
    frame: bytes = b""
    announced: int = 0  #: rows of all kinds as the frame's header announces them (known before decoding)
    decoding: Future[Exception | None] | None = None  #: its decode, started on arrival (the coalescer's)

    @property
    def rows(self) -> dict[str, int]:
        """Rows per kind."""
        return {kind: t.num_rows for kind, t in (self.tables or {}).items()}

    @property
    def num_rows(self) -> int:
        """Rows of all kinds (the announced ones until decoded)."""
        if self.tables is None:
            return self.announced
        return sum(t.num_rows for t in self.tables.values())


@dataclass
class Block:
    """One merged insert: a kind, the members it holds (indices), their rows concatenated."""

    kind: str
    members: list[int]
    table: pa.Table


@dataclass
class GroupOutcome:
    """Per member: its InsertResult, or the exception that refused it (``IngestError``-like ValueError)."""

    results: dict[BatchKey, InsertResult | Exception] = field(default_factory=dict)
    split_from: int | None = None  #: block index a data error split the group at (None: merged throughout)


def group_digest(keys: list[BatchKey]) -> str:
    """Hash of the sorted member keys (the group's identity in tokens and the WAL)."""
    h = hashlib.sha256()
    for key in sorted(keys, key=lambda k: (k.agent_id, k.seq)):
        h.update(key.agent_id.encode() + b"\0" + str(key.seq).encode() + b"\n")
    return h.hexdigest()[:40]


def plan_blocks(members: list[PreparedBatch]) -> list[Block]:
    """Merged blocks in a fixed order: per kind (``KINDS`` order), per distinct schema (first seen first).

    Which members a block holds depends on the members alone (never on tagging): replays match.
    """
    blocks: list[Block] = []
    for kind in KINDS:
        by_schema: dict[pa.Schema, Block] = {}
        for i, m in enumerate(members):
            table = (m.tables or {}).get(kind)
            if table is None or table.num_rows == 0:
                continue
            schema = table.schema.remove_metadata()
            block = by_schema.get(schema)
            if block is None:
                block = by_schema[schema] = Block(kind, [], table)
            block.members.append(i)
        for block in by_schema.values():
            block.table = pa.concat_tables([members[i].tables[kind] for i in block.members])  # type: ignore[index]
            blocks.append(block)
    return blocks


def _tag_block(block: Block, members: list[PreparedBatch], tag: Any, on_tag_error: Any) -> pa.Table:
    """``tag(kind, table)`` on the whole block; if it raises, on each member's rows alone.

    A member whose tagging fails goes in untagged (``on_tag_error(key, exc)``), the others stay tagged.
    """
    try:
        return tag(block.kind, block.table)
    except Exception as merged_error:
        parts: list[pa.Table | None] = []
        for i in block.members:
            try:
                parts.append(tag(block.kind, members[i].tables[block.kind]))  # type: ignore[index]
            except Exception as exc:
                parts.append(None)
                if on_tag_error is not None:
                    on_tag_error(members[i].key, exc)
        tagged = [p for p in parts if p is not None]
        if not tagged:  # the tagger itself is broken: the block goes in untagged (counted per member above)
            return block.table
        try:
            untagged = [members[i].tables[block.kind] for i in block.members]  # type: ignore[index]
            schema = tagged[0].schema
            return pa.concat_tables(
                [_conform(t, schema) if p is None else p for p, t in zip(parts, untagged, strict=True)],
                promote_options="permissive",
            )
        except (pa.ArrowException, ValueError, TypeError):
            raise merged_error from None  # cannot happen with the Tagger (it only adds UInt32 ids)


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with the columns of ``schema`` it lacks (the ids tagging adds) as zeros."""
    for name in schema.names:
        if name not in table.column_names:
            typ = schema.field(name).type
            zero = pa.scalar(0, typ) if pa.types.is_integer(typ) else pa.scalar(None, typ)
            table = table.append_column(name, pa.repeat(zero, table.num_rows))
    return table


def logged_keys(store: Any, keys: list[BatchKey]) -> set[BatchKey]:
    """Which of ``keys`` are already recorded in ``ingest_log`` (one query)."""
    if not keys:
        return set()
    tuples = ", ".join(f"({quote(k.agent_id)}, {int(k.seq)})" for k in keys)
    table = store.query_arrow(
        f"SELECT DISTINCT agent_id, seq FROM {store.ctx.local('ingest_log')} WHERE (agent_id, seq) IN ({tuples})"
    )
    return {BatchKey(a, int(s)) for a, s in zip(table.column("agent_id").to_pylist(), table.column("seq").to_pylist(), strict=True)}


def insert_group(
    store: Any, members: list[PreparedBatch], digest: str, split_from: int | None = None, on_split: Any = None,
    tag: Any = None, on_tag_error: Any = None,
) -> GroupOutcome:  # fmt: skip
    """Insert ``members`` as merged blocks, then log every member; idempotent for a given digest.

    Args:
        store: a ClickHouseStore (``insert``, ``command``, ``ctx``).
        members: the group, in the order it was formed (part of what a replay must repeat).
        digest: ``group_digest`` of the members' keys.
        split_from: resume a group a data error split (replay): blocks from this index on go per member.
        on_split: called with the block index before the group is split (to record it in the WAL).
        tag: ``tag(kind, table) -> table``, run on each merged block (and on each member's rest after a
            split); if it raises, the member(s) it fails for go in untagged (see ``_tag_block``).
        on_tag_error: ``on_tag_error(key, exc)`` for each member stored untagged.

    Returns:
        Each member's result. An insert error that is not the store being unavailable (see
        :func:`store_unavailable`) in a merged block splits the group: the blocks before it are stored
        merged, the rest is inserted per member with the member's own key. A member the store refuses
        (ValueError, or the same error twice while other members went in) is refused alone: its result
        is a ValueError.

    Raises:
        Exception: the store is unavailable (or refused every member): the group is left for a replay.
    """
    blocks = plan_blocks(members)
    start = len(blocks) if split_from is None else split_from
    if split_from is None:
        for i, block in enumerate(blocks):
            table = block.table if tag is None else _tag_block(block, members, tag, on_tag_error)
            try:
                store.insert({block.kind: table}, BatchKey(GROUP_PREFIX + digest, i))
            except Exception as exc:
                if store_unavailable(exc):
                    raise  # not the data: the whole group is written again later, as it is
                if on_split is not None:
                    on_split(i)
                start = i
                break
    outcome = GroupOutcome(split_from=None if start == len(blocks) else start)
    if outcome.split_from is None:
        _log_members(store, members, digest)
        for m in members:
            outcome.results[m.key] = InsertResult(rows=m.rows)
        return outcome
    rest = blocks[start:]
    failed = []
    for i, m in enumerate(members):  # split: the rest of each member under its own key
        if not _insert_rest(store, m, i, rest, tag, on_tag_error, outcome):
            failed.append(i)
    stored = any(isinstance(r, InsertResult) for r in outcome.results.values())
    for i in failed:  # a second try once the others went in: failing again, it is this member's data
        m = members[i]
        if not _insert_rest(store, m, i, rest, tag, on_tag_error, outcome):
            error = outcome.results.pop(m.key)
            assert isinstance(error, Exception)
            if not stored:
                raise error  # nothing went in: blame the store, not the data
            outcome.results[m.key] = _refused(error)
    return outcome


def insert_alone(store: Any, key: BatchKey, tables: dict[str, pa.Table]) -> InsertResult | ValueError:
    """Insert one batch under its own key; the ValueError that refuses it, if its data is at fault.

    An error that does not say the store is unavailable is tried twice; failing again while the store
    answers a query, it is the batch's data (refused, like a member of a group).

    Raises:
        Exception: the store is unavailable.
    """
    error: Exception | None = None
    for _ in range(2):
        try:
            result: InsertResult = store.insert(tables, key)
            return result
        except ValueError as exc:
            return exc
        except Exception as exc:
            if store_unavailable(exc):
                raise
            error = exc
    assert error is not None
    logged_keys(store, [key])  # raises when the store does not answer: then it is not the data
    return _refused(error)


def _insert_rest(
    store: Any, m: PreparedBatch, index: int, blocks: list[Block], tag: Any, on_tag_error: Any,
    outcome: GroupOutcome,
) -> bool:  # fmt: skip
    """Insert the kinds of member ``index`` in ``blocks`` under its own key; False: an error to try again.

    Raises:
        Exception: the store is unavailable.
    """
    tables = m.tables or {}
    rest = {}
    for b in blocks:
        if index in b.members:
            rest[b.kind] = tables[b.kind]
            if tag is not None:
                try:
                    rest[b.kind] = tag(b.kind, tables[b.kind])
                except Exception as exc:  # never lose a batch to tagging
                    if on_tag_error is not None:
                        on_tag_error(m.key, exc)
    try:
        result = store.insert(rest, m.key)
    except ValueError as exc:
        outcome.results[m.key] = exc
        return True
    except Exception as exc:
        if store_unavailable(exc):
            raise
        outcome.results[m.key] = exc
        return False
    outcome.results[m.key] = InsertResult(rows=m.rows, duplicate=result.duplicate)
    return True


#: ClickHouse error names that mean the store, not the data, failed (the group is retried whole).
_UNAVAILABLE = (
    "MEMORY_LIMIT_EXCEEDED", "TIMEOUT_EXCEEDED", "SOCKET_TIMEOUT", "NETWORK_ERROR", "TOO_MANY_PARTS",
    "TOO_MANY_SIMULTANEOUS_QUERIES", "NOT_ENOUGH_SPACE", "TABLE_IS_READ_ONLY", "ALL_CONNECTION_TRIES_FAILED",
    "KEEPER_EXCEPTION", "CANNOT_ALLOCATE_MEMORY", "QUERY_WAS_CANCELLED", "ABORTED", "UNKNOWN_TABLE",
    "UNKNOWN_DATABASE", "CANNOT_WRITE_TO_FILE_DESCRIPTOR", "CANNOT_FSYNC", "READONLY",
)  # fmt: skip


def store_unavailable(exc: BaseException) -> bool:
    """True when ``exc`` says the store is down or overloaded (retry the same group), not that data is bad."""
    if isinstance(exc, ValueError):  # the store's word for bad data
        return False
    if isinstance(exc, OSError | MemoryError):
        return True
    if type(exc).__name__ in ("OperationalError", "StreamFailureError"):  # clickhouse-connect: no answer
        return True
    return any(f"({name})" in str(exc) for name in _UNAVAILABLE)


def _refused(error: Exception) -> ValueError:
    """The refusal of a batch the store keeps failing on (while it takes other data)."""
    first_line = (str(error).strip().splitlines() or [""])[0][:300]
    return ValueError(f"refused by the store: {type(error).__name__}: {first_line}")


def _log_members(store: Any, members: list[PreparedBatch], digest: str) -> None:
    """One ``ingest_log`` block with a row per member (its own token: a replay dedups)."""
    values = ", ".join(
        f"({quote(m.key.agent_id)}, {int(m.key.seq)}, [{', '.join(quote(k) for k in m.rows)}], "
        f"[{', '.join(str(n) for n in m.rows.values())}])"
        for m in members
    )
    token = quote(f"{GROUP_PREFIX}{digest}:members")
    store.command(
        f"INSERT INTO {store.ctx.local('ingest_log')} (agent_id, seq, kinds, rows) "
        f"SETTINGS insert_deduplication_token = {token} VALUES {values}"
    )

"""Store many agents' batches as one block per table, exactly once per (agent_id, seq).

Written against the store's public API only: each merged block is ``store.insert({kind: table},
BatchKey("~group:<digest>", i))`` (so it gets the token ``~group:<digest>:<i>:<kind>`` and its own
``ingest_log`` row), then one ``ingest_log`` block holds a row per member (token
``~group:<digest>:members``). The digest is a hash of the sorted member keys. See docs/shipping.md
("Coalesced ingest") for why a crash anywhere neither loses nor doubles a row.
"""

from __future__ import annotations

import hashlib
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
    tables: dict[str, pa.Table] | None  #: None until decoded (by the writer thread)
    frame: bytes = b""

    @property
    def rows(self) -> dict[str, int]:
        """Rows per kind."""
        return {kind: t.num_rows for kind, t in (self.tables or {}).items()}

    @property
    def num_rows(self) -> int:
        """Rows of all kinds."""
        return sum(t.num_rows for t in (self.tables or {}).values())


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


def plan_blocks(members: list[PreparedBatch], tag: Any = None) -> list[Block]:
    """Merged blocks in a fixed order: per kind (``KINDS`` order), per distinct schema (first seen first).

    ``tag(kind, table) -> table`` (cloud ids) runs once per merged block.
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
            if tag is not None:
                block.table = tag(kind, block.table)
            blocks.append(block)
    return blocks


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
    tag: Any = None,
) -> GroupOutcome:  # fmt: skip
    """Insert ``members`` as merged blocks, then log every member; idempotent for a given digest.

    Args:
        store: a ClickHouseStore (``insert``, ``command``, ``ctx``).
        members: the group, in the order it was formed (part of what a replay must repeat).
        digest: ``group_digest`` of the members' keys.
        split_from: resume a group a data error split (replay): blocks from this index on go per member.
        on_split: called with the block index before the group is split (to record it in the WAL).
        tag: ``tag(kind, table) -> table``, run on each merged block (and on each member's rest after a split).

    Returns:
        Each member's result. A data error (ValueError) in a merged block splits the group: the blocks
        before it are stored merged, the rest is inserted per member with the member's own key, so only
        the faulty batch is refused.

    Raises:
        Exception: anything else (store unavailable...): the group is left for a replay.
    """
    blocks = plan_blocks(members, tag)
    start = len(blocks) if split_from is None else split_from
    if split_from is None:
        for i, block in enumerate(blocks):
            try:
                store.insert({block.kind: block.table}, BatchKey(GROUP_PREFIX + digest, i))
            except ValueError:
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
    for i, m in enumerate(members):  # split: the rest of each member under its own key
        tables = m.tables or {}
        rest = {b.kind: tables[b.kind] if tag is None else tag(b.kind, tables[b.kind]) for b in blocks[start:] if i in b.members}
        try:
            result = store.insert(rest, m.key)
            outcome.results[m.key] = InsertResult(rows=m.rows, duplicate=result.duplicate)
        except ValueError as exc:
            outcome.results[m.key] = exc
    return outcome


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

"""InventoryStore: the inventory with history (validity intervals), kept in the server's ClickHouse.

Every connector snapshot is diffed against what the store holds for that source: entities that
vanished or changed get their interval closed at the snapshot's ``taken_at``, new and changed ones
get a new interval from then. Each ``(kind, key)`` gets a stable small integer id (``UInt32``, per
kind, from 1), the value of the flow tables' ``<side>_<kind>_id`` columns.

Tables (in the store's database; see docs/inventory.md):

* ``inventory_entity`` -- one row per entity interval: kind, source, key, id, name, parents
  (``Map`` of references to other entities' keys), attrs (JSON of the entity), valid_from/valid_to
  (Int64 ns; ``valid_to = 2^63-1`` while open). ``ReplacingMergeTree(rev)``: closing an interval
  re-inserts the row with its end and a higher ``rev``.
* ``inventory_address`` -- one row per address interval (ip, segment, mac and the ids behind it),
  derived from the merged view after each change.
* ``inventory_names`` -- a view ``(kind, id, name, valid_from, valid_to)`` for query-time joins.

Reads are served from memory (loaded at start): diffs, views at any time, names, tagging.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from cloudtap.inventory.addresses import OPEN, AddressRecord, derive_addresses
from cloudtap.inventory.entities import check_kind, display_name, entities_of, parents_of, to_attrs
from cloudtap.inventory.history import ChangeSummary, EntityRecord
from cloudtap.inventory.model import Snapshot
from cloudtap.inventory.view import SOURCE_PRIORITY, InventoryView, build_view

ENTITY_TABLE = "inventory_entity"
ADDRESS_TABLE = "inventory_address"
NAMES_VIEW = "inventory_names"
_INSERT_CHUNK = 2000
_ID_COLUMNS = (
    "interface_id",
    "region_id",
    "project_id",
    "host_id",
    "vm_id",
    "subnet_id",
    "pod_id",
    "service_id",
)


class InventoryStore:
    """Entities and addresses with validity intervals; persisted in ClickHouse when given a store.

    Args:
        store: a ``ClickHouseStore`` (its database gets the inventory tables), or ``None`` to keep
            the inventory in memory only.
        priority: source order for merging (first wins).
        backdate_first_sync: the first snapshot of a source opens its intervals at 0 ("since ever")
            instead of at ``taken_at``, so captures older than the first sync still get tagged.
    """

    def __init__(
        self,
        store: Any | None = None,
        priority: Sequence[str] = SOURCE_PRIORITY,
        backdate_first_sync: bool = False,
    ) -> None:
        self.store = store
        self.priority = tuple(priority)
        self.backdate_first_sync = backdate_first_sync
        self.revision = 0  #: bumped by every change (caches key on it)
        self._lock = threading.RLock()
        self._records: list[EntityRecord] = []
        self._open: dict[tuple[str, str, str], int] = {}  # (source, kind, key) -> index in _records
        self._ids: dict[tuple[str, str], int] = {}
        self._next_id: dict[str, int] = {}
        self._last: dict[str, int] = {}
        self._with_records: set[str] = set()
        self._addresses: list[AddressRecord] = []
        self._open_addr: dict[tuple[str, int, str], int] = {}
        self._views: dict[int | None, InventoryView] = {}
        self._bounds: np.ndarray | None = None
        self._rev_clock = 0
        if store is not None:
            self.ensure_tables()
            self.load()

    # -- tables ----------------------------------------------------------------------------------
    def _table(self, name: str) -> str:
        from cloudtap.clickhouse_sql import ident

        return f"{ident(self.store.database)}.{ident(name)}"

    def ensure_tables(self) -> None:
        """Create the inventory tables and view if missing."""
        ent, addr = self._table(ENTITY_TABLE), self._table(ADDRESS_TABLE)
        ids = ", ".join(f"`{c}` UInt32" for c in _ID_COLUMNS)
        self.store.command(
            f"CREATE TABLE IF NOT EXISTS {ent} (kind LowCardinality(String), source LowCardinality(String), "
            "key String, id UInt32, name String, parents Map(String, String), attrs String, "
            "valid_from Int64, valid_to Int64, rev UInt64) "
            "ENGINE = ReplacingMergeTree(rev) ORDER BY (kind, source, key, valid_from)"
        )
        self.store.command(
            f"CREATE TABLE IF NOT EXISTS {addr} (ip IPv6, segment UInt32, mac String, {ids}, "
            "source LowCardinality(String), valid_from Int64, valid_to Int64, rev UInt64) "
            "ENGINE = ReplacingMergeTree(rev) ORDER BY (ip, segment, mac, valid_from)"
        )
        self.store.command(
            f"CREATE VIEW IF NOT EXISTS {self._table(NAMES_VIEW)} AS SELECT kind, id, "
            f"argMax(name, rev) AS name, valid_from, argMax(valid_to, rev) AS valid_to "
            f"FROM {ent} GROUP BY kind, source, key, id, valid_from"
        )

    def load(self) -> None:
        """(Re)load the whole history from the tables."""
        ent = self.store.query_arrow(
            f"SELECT kind, source, key, id, name, attrs, valid_from, valid_to, rev FROM {self._table(ENTITY_TABLE)} "
            "FINAL ORDER BY valid_from, kind, id"
        ).to_pylist()
        addr = self.store.query_arrow(
            f"SELECT IPv6NumToString(ip) AS ip_text, segment, mac, {', '.join(_ID_COLUMNS)}, source, valid_from, "
            f"valid_to, rev FROM {self._table(ADDRESS_TABLE)} FINAL ORDER BY valid_from"
        ).to_pylist()
        with self._lock:
            self._records, self._open, self._ids, self._next_id, self._last = [], {}, {}, {}, {}
            self._with_records = set()
            for row in ent:
                rec = EntityRecord(
                    row["kind"], row["source"], row["key"], int(row["id"]), row["name"], row["attrs"],
                    int(row["valid_from"]), int(row["valid_to"]),
                )  # fmt: skip
                self._add_record(rec)
                self._with_records.add(rec.source)
                self._ids[(rec.kind, rec.key)] = rec.id
                self._next_id[rec.kind] = max(self._next_id.get(rec.kind, 1), rec.id + 1)
                seen = rec.valid_from if rec.is_open else max(rec.valid_from, rec.valid_to)
                self._last[rec.source] = max(self._last.get(rec.source, 0), seen)
                self._rev_clock = max(self._rev_clock, int(row["rev"]))
            self._addresses, self._open_addr = [], {}
            for row in addr:
                ip = row["ip_text"]
                ip = "" if ip == "::" else ip.removeprefix("::ffff:") if "." in ip else ip
                rec_a = AddressRecord(
                    ip=ip, segment=int(row["segment"]), mac=row["mac"], source=row["source"],
                    valid_from=int(row["valid_from"]), valid_to=int(row["valid_to"]),
                    **{c: int(row[c]) for c in _ID_COLUMNS},
                )  # fmt: skip
                self._addresses.append(rec_a)
                if rec_a.valid_to == OPEN:
                    self._open_addr[rec_a.key] = len(self._addresses) - 1
            self._changed()

    def _add_record(self, rec: EntityRecord) -> None:
        self._records.append(rec)
        if rec.is_open:
            self._open[(rec.source, rec.kind, rec.key)] = len(self._records) - 1

    def _changed(self) -> None:
        self.revision += 1
        self._views = {}
        self._bounds = None

    def _rev(self) -> int:
        self._rev_clock = max(self._rev_clock + 1, time.time_ns())
        return self._rev_clock

    # -- writing ---------------------------------------------------------------------------------
    def _id_for(self, kind: str, key: str) -> int:
        found = self._ids.get((kind, key))
        if found is None:
            found = self._next_id.get(kind, 1)
            self._next_id[kind] = found + 1
            self._ids[(kind, key)] = found
        return found

    def apply(self, snapshot: Snapshot) -> ChangeSummary:
        """Record a connector's snapshot: close the intervals of vanished or changed entities, open new ones.

        Raises:
            ValueError: the snapshot is older than the source's last one, or repeats a ``(kind, key)``.
        """
        src, t = snapshot.source, int(snapshot.taken_at)
        if not src:
            raise ValueError("snapshot has no source name")
        summary = ChangeSummary(source=src, taken_at=t)
        seen: dict[tuple[str, str], Any] = {}
        for kind, entity in entities_of(snapshot):
            if not entity.key:
                raise ValueError(f"{src}: a {kind} has an empty key ({entity!r})")
            if (kind, entity.key) in seen:
                raise ValueError(f"{src}: {kind} {entity.key!r} appears twice in the snapshot")
            seen[(kind, entity.key)] = entity
        with self._lock:
            last = self._last.get(src)
            if last is not None and t < last:
                raise ValueError(f"{src}: snapshot taken at {t} is older than the last one ({last})")
            start = 0 if (self.backdate_first_sync and src not in self._with_records) else t
            rows: list[tuple[EntityRecord, int]] = []
            for (kind, key), entity in seen.items():
                attrs = to_attrs(entity)
                idx = self._open.get((src, kind, key))
                if idx is not None:
                    old = self._records[idx]
                    if old.attrs == attrs:
                        continue
                    rows.append(self._close(idx, t))
                    summary.count("changed", kind, key)
                else:
                    summary.count("added", kind, key)
                rec = EntityRecord(kind, src, key, self._id_for(kind, key), display_name(entity), attrs,
                                   start if idx is None else t)  # fmt: skip
                rec.__dict__["entity"] = entity  # cached_property: no JSON round trip
                self._add_record(rec)
                self._with_records.add(src)
                rows.append((rec, self._rev()))
            for (s, kind, key), idx in list(self._open.items()):
                if s == src and (kind, key) not in seen:
                    rows.append(self._close(idx, t))
                    summary.count("removed", kind, key)
            self._last[src] = t
            if not rows:
                return summary
            self._changed()
            addr_rows = self._update_addresses(t, start)
            if self.store is not None:
                self._write_entities(rows)
                self._write_addresses(addr_rows)
        return summary

    def _close(self, idx: int, t: int) -> tuple[EntityRecord, int]:
        old = self._records[idx]
        closed = dataclasses.replace(old, valid_to=max(t, old.valid_from))
        self._records[idx] = closed
        del self._open[(old.source, old.kind, old.key)]
        return closed, self._rev()

    def _update_addresses(self, t: int, start: int) -> list[tuple[AddressRecord, int]]:
        now = {a.key: a for a in derive_addresses(self.view(None))}
        rows: list[tuple[AddressRecord, int]] = []
        for key, idx in list(self._open_addr.items()):
            old = self._addresses[idx]
            new = now.get(key)
            if new is not None and new.payload == old.payload and new.source == old.source:
                del now[key]
                continue
            closed = dataclasses.replace(old, valid_to=max(t, old.valid_from))
            self._addresses[idx] = closed
            del self._open_addr[key]
            rows.append((closed, self._rev()))
        for key, new in now.items():
            rec = dataclasses.replace(new, valid_from=start)
            self._addresses.append(rec)
            self._open_addr[key] = len(self._addresses) - 1
            rows.append((rec, self._rev()))
        return rows

    def _write_entities(self, rows: list[tuple[EntityRecord, int]]) -> None:
        from cloudtap.clickhouse_sql import quote

        def values(rec: EntityRecord, rev: int) -> str:
            parents = ", ".join(f"{quote(k)}: {quote(v)}" for k, v in parents_of(rec.entity).items())
            return (
                f"({quote(rec.kind)}, {quote(rec.source)}, {quote(rec.key)}, {rec.id}, {quote(rec.name)}, "
                f"{{{parents}}}, {quote(rec.attrs)}, {rec.valid_from}, {rec.valid_to}, {rev})"
            )

        self._insert(ENTITY_TABLE, [values(r, v) for r, v in rows])

    def _write_addresses(self, rows: list[tuple[AddressRecord, int]]) -> None:
        from cloudtap.clickhouse_sql import quote

        def values(rec: AddressRecord, rev: int) -> str:
            ip = rec.ip or "::"
            ip = f"::ffff:{ip}" if "." in ip else ip
            ids = ", ".join(str(getattr(rec, c)) for c in _ID_COLUMNS)
            return (
                f"(toIPv6({quote(ip)}), {rec.segment}, {quote(rec.mac)}, {ids}, {quote(rec.source)}, "
                f"{rec.valid_from}, {rec.valid_to}, {rev})"
            )

        self._insert(ADDRESS_TABLE, [values(r, v) for r, v in rows])

    def _insert(self, table: str, values: list[str]) -> None:
        for lo in range(0, len(values), _INSERT_CHUNK):
            chunk = ",\n".join(values[lo : lo + _INSERT_CHUNK])
            self.store.command(f"INSERT INTO {self._table(table)} VALUES {chunk}")

    # -- reading ---------------------------------------------------------------------------------
    def boundaries(self) -> np.ndarray:
        """Sorted distinct times (ns) at which anything started or ended: views are constant between them."""
        with self._lock:
            if self._bounds is None:
                times = {r.valid_from for r in self._records} | {
                    r.valid_to for r in self._records if not r.is_open
                }
                self._bounds = np.asarray(sorted(times), dtype=np.int64)
            return self._bounds

    def epoch_of(self, ns: int) -> int | None:
        """Start of the constant stretch holding ``ns`` (``None``: before anything was known)."""
        bounds = self.boundaries()
        i = int(np.searchsorted(bounds, ns, side="right")) - 1
        return int(bounds[i]) if i >= 0 else None

    def view(self, at_ns: int | None = None) -> InventoryView:
        """The merged inventory at ``at_ns`` (``None``: now), with ids. Cached until the next change."""
        with self._lock:
            cache_key: int | None = None if at_ns is None else self.epoch_of(int(at_ns))
            if at_ns is not None and cache_key is None:
                cache_key = -1
            found = self._views.get(cache_key)
            if found is None:
                if at_ns is None:
                    records = [self._records[i] for i in self._open.values()]
                else:
                    ns = int(at_ns)
                    records = [r for r in self._records if r.valid_at(ns)]
                found = build_view(records, at_ns, self.priority)
                self._views[cache_key] = found
            return found

    def current(self) -> Snapshot:
        """Everything known now, merged over sources (``source="merged"``)."""
        return self.view(None).snapshot

    def at(self, ns: int) -> Snapshot:
        """Everything that was valid at ``ns``, merged over sources."""
        return self.view(ns).snapshot

    def history(self, kind: str, key: str) -> list[EntityRecord]:
        """Every interval of ``(kind, key)``, all sources, oldest first."""
        check_kind(kind)
        with self._lock:
            found = [r for r in self._records if r.kind == kind and r.key == key]
        return sorted(found, key=lambda r: (r.valid_from, r.source))

    def records(self, kind: str | None = None) -> list[EntityRecord]:
        """All entity intervals (of ``kind``), in insertion order."""
        with self._lock:
            return [r for r in self._records if kind is None or r.kind == kind]

    def addresses(self, at_ns: int | None = None) -> list[AddressRecord]:
        """Address rows valid at ``at_ns`` (``None``: open now)."""
        with self._lock:
            if at_ns is None:
                return [self._addresses[i] for i in self._open_addr.values()]
            return [a for a in self._addresses if a.valid_from <= at_ns < a.valid_to]

    def id_of(self, kind: str, key: str) -> int:
        """The id ever assigned to ``(kind, key)``, 0 if never seen."""
        return self._ids.get((kind, key), 0)

    def sources(self) -> dict[str, int]:
        """Source -> ``taken_at`` of its last applied snapshot."""
        with self._lock:
            return dict(self._last)

"""InventoryNames: the NameResolver over the inventory history, and name filters -> id filters."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from typing import Any

from cloudtap.inventory.addresses import ID_FIELDS, OPEN
from cloudtap.inventory.entities import check_kind
from cloudtap.inventory.names import NameResolver
from cloudtap.inventory.store import InventoryStore
from cloudtap.inventory.view import priority_rank

_Interval = tuple[int, int, int, str]  # valid_from, valid_to, source rank, name
_SIDED = re.compile(r"^(?:(client|server)_)?([a-z]+)$")


class NameFilterError(ValueError):
    """A name filter matches no entity (or names an unknown kind)."""


class InventoryNames:
    """Names and ids of inventory entities at any moment, from the in-memory history (no query per id).

    ``at_ns=None`` means now; an entity that no longer exists keeps its last name, so old flows
    still show (and filter by) the name their VM had when it vanished.
    """

    def __init__(self, inventory: InventoryStore) -> None:
        self.inventory = inventory
        self._cache: dict[str, tuple[int, dict[int, list[_Interval]]]] = {}

    def _intervals(self, kind: str) -> dict[int, list[_Interval]]:
        cached = self._cache.get(kind)
        rev = self.inventory.revision
        if cached is not None and cached[0] == rev:
            return cached[1]
        rank = priority_rank(self.inventory.priority)
        table: dict[int, list[_Interval]] = {}
        for rec in self.inventory.records(kind):
            table.setdefault(rec.id, []).append((rec.valid_from, rec.valid_to, rank.get(rec.source, len(rank)), rec.name))
        self._cache[kind] = (rev, table)
        return table

    @staticmethod
    def _name_at(intervals: list[_Interval], at_ns: int | None) -> str | None:
        if at_ns is None:
            live = [iv for iv in intervals if iv[1] == OPEN]
            if live:
                return min(live, key=lambda iv: iv[2])[3]
            return max(intervals, key=lambda iv: (iv[1], -iv[2]))[3]
        live = [iv for iv in intervals if iv[0] <= at_ns < iv[1]]
        return min(live, key=lambda iv: iv[2])[3] if live else None

    def names(self, kind: str, ids: Iterable[int], at_ns: int | None = None) -> dict[int, str]:
        """Names of ``ids`` of ``kind`` at ``at_ns`` (``None``: now, or last known). Unknown ids are left out."""
        table = self._intervals(check_kind(kind))
        out: dict[int, str] = {}
        for i in ids:
            intervals = table.get(int(i))
            if intervals:
                name = self._name_at(intervals, at_ns)
                if name is not None:
                    out[int(i)] = name
        return out

    def ids(self, kind: str, name: str, at_ns: int | None = None) -> list[int]:
        """Ids of ``kind`` called ``name`` (``*``/``?``/``[..]`` globs) at ``at_ns``; ``[]`` if none."""
        table = self._intervals(check_kind(kind))
        glob = any(c in name for c in "*?[")
        hits = []
        for i, intervals in table.items():
            current = self._name_at(intervals, at_ns)
            if current is not None and (fnmatch.fnmatchcase(current, name) if glob else current == name):
                hits.append(i)
        return sorted(hits)


def resolve_name_filters(filters: Mapping[str, Any], resolver: NameResolver, at_ns: int | None = None) -> dict[str, Any]:
    """Turn name filters into id filters; other keys pass through unchanged.

    ``{"project": "payments", "client_vm": "web-*", "port": 443}`` becomes
    ``{"project_id": [3], "client_vm_id": [7, 8], "port": 443}``. A key without side (``project_id``)
    means either side of a flow or edge (and the endpoint's own id). Values may be a name or a list
    of names; globs are allowed.

    Raises:
        NameFilterError: a name matches nothing at ``at_ns``.
    """
    out: dict[str, Any] = {}
    for key, value in filters.items():
        m = _SIDED.match(key)
        if m is None or m.group(2) not in ID_FIELDS:
            out[key] = value
            continue
        side, kind = m.group(1), m.group(2)
        names = [value] if isinstance(value, str) else list(value)
        found: set[int] = set()
        for name in names:
            hits = resolver.ids(kind, str(name), at_ns)
            if not hits:
                raise NameFilterError(f"no {kind} named {name!r} in the inventory")
            found.update(hits)
        out[f"{side}_{kind}_id" if side else f"{kind}_id"] = sorted(found)
    return out

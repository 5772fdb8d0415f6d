"""InventoryView: the merged inventory at one moment, with the stable integer id of every entity."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cloudtap.inventory.entities import KIND_SPECS
from cloudtap.inventory.model import Snapshot

if TYPE_CHECKING:
    from cloudtap.inventory.history import EntityRecord

#: Which source wins when two report the same ``(kind, key)`` (first wins; unknown sources come last).
SOURCE_PRIORITY = ("openstack", "vsphere", "kubernetes", "static", "agents")


@dataclass
class InventoryView:
    """Every entity valid at ``at`` (``None``: now), merged over sources.

    Attributes:
        at: the moment (ns since the epoch) or ``None`` for the current inventory.
        snapshot: the merged entities (``source="merged"``).
        ids: ``kind -> key -> id``.
        sources: ``(kind, key) -> source`` that supplied the entity.
    """

    at: int | None
    snapshot: Snapshot
    ids: dict[str, dict[str, int]] = field(default_factory=dict)
    sources: dict[tuple[str, str], str] = field(default_factory=dict)
    _by_key: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)
    derived: list[Any] | None = field(default=None, repr=False)  #: derive_addresses' cache

    def id_of(self, kind: str, key: str) -> int:
        """Integer id of ``(kind, key)``; 0 when not in the view."""
        return self.ids.get(kind, {}).get(key, 0) if key else 0

    def by_key(self, kind: str) -> dict[str, Any]:
        """``key -> entity`` of one kind."""
        found = self._by_key.get(kind)
        if found is None:
            found = {e.key: e for e in getattr(self.snapshot, KIND_SPECS[kind][0])}
            self._by_key[kind] = found
        return found


def priority_rank(priority: Sequence[str]) -> dict[str, int]:
    """Source name -> rank (lower wins)."""
    return {s: i for i, s in enumerate(priority)}


def build_view(records: Iterable[EntityRecord], at: int | None, priority: Sequence[str] = SOURCE_PRIORITY) -> InventoryView:
    """Merge the records valid at ``at`` into a view (the best-ranked source wins per ``(kind, key)``).

    Args:
        records: entity records already filtered to those valid at ``at``.
        at: the moment, for the snapshot's ``taken_at`` (0 when ``None``).
        priority: source order.
    """
    rank = priority_rank(priority)
    best: dict[tuple[str, str], EntityRecord] = {}
    for rec in records:
        k = (rec.kind, rec.key)
        old = best.get(k)
        if old is None or (rank.get(rec.source, len(rank)), rec.source) < (rank.get(old.source, len(rank)), old.source):
            best[k] = rec
    snap = Snapshot(source="merged", taken_at=at or 0)
    view = InventoryView(at=at, snapshot=snap)
    for (kind, key), rec in sorted(best.items(), key=lambda kv: (kv[1].kind, kv[1].id)):
        getattr(snap, KIND_SPECS[kind][0]).append(rec.entity)
        view.ids.setdefault(kind, {})[key] = rec.id
        view.sources[(kind, key)] = rec.source
    return view

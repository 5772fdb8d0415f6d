"""The inventory's history as values: :class:`EntityRecord` (one validity interval of one entity, from one
source) and :class:`ChangeSummary` (what one snapshot changed); kept by ``inventory/store.py``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from cloudtap.inventory.addresses import OPEN
from cloudtap.inventory.entities import from_attrs


@dataclass(frozen=True)
class EntityRecord:
    """One validity interval of one entity as reported by one source."""

    kind: str
    source: str
    key: str
    id: int
    name: str
    attrs: str  #: canonical JSON of the entity
    valid_from: int
    valid_to: int = OPEN

    @cached_property
    def entity(self) -> Any:
        """The model object."""
        return from_attrs(self.kind, self.attrs)

    @property
    def is_open(self) -> bool:
        """True while the interval has not ended."""
        return self.valid_to == OPEN

    def valid_at(self, ns: int) -> bool:
        """True when the interval holds ``ns``."""
        return self.valid_from <= ns < self.valid_to

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form (``valid_to`` ``None`` while open)."""
        return {
            "kind": self.kind,
            "source": self.source,
            "key": self.key,
            "id": self.id,
            "name": self.name,
            "valid_from": self.valid_from,
            "valid_to": None if self.is_open else self.valid_to,
            "attrs": dataclasses.asdict(self.entity),
        }


@dataclass
class ChangeSummary:
    """What one :meth:`InventoryStore.apply` changed."""

    source: str
    taken_at: int
    added: dict[str, int] = field(default_factory=dict)
    changed: dict[str, int] = field(default_factory=dict)
    removed: dict[str, int] = field(default_factory=dict)
    changes: list[tuple[str, str, str]] = field(default_factory=list)  #: (added|changed|removed, kind, key)

    @property
    def total(self) -> int:
        """Number of entity changes."""
        return len(self.changes)

    def count(self, op: str, kind: str, key: str) -> None:
        """Note one change: ``op`` is ``added``, ``changed`` or ``removed``."""
        counts = getattr(self, op)
        counts[kind] = counts.get(kind, 0) + 1
        self.changes.append((op, kind, key))

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form (without the per-entity list)."""
        return {
            "source": self.source,
            "taken_at": self.taken_at,
            "added": self.added,
            "changed": self.changed,
            "removed": self.removed,
            "total": self.total,
        }

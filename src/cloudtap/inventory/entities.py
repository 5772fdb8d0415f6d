"""Entity kinds <-> model classes <-> Snapshot fields, and the JSON form the history store keeps."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

from cloudtap.inventory.model import (
    VM,
    Host,
    Interface,
    Namespace,
    Network,
    Node,
    Pod,
    Project,
    Region,
    Service,
    Snapshot,
    Subnet,
    Zone,
)

#: kind -> (Snapshot attribute, entity class)
KIND_SPECS: dict[str, tuple[str, type]] = {
    "region": ("regions", Region),
    "zone": ("zones", Zone),
    "project": ("projects", Project),
    "host": ("hosts", Host),
    "network": ("networks", Network),
    "subnet": ("subnets", Subnet),
    "vm": ("vms", VM),
    "interface": ("interfaces", Interface),
    "namespace": ("namespaces", Namespace),
    "node": ("nodes", Node),
    "pod": ("pods", Pod),
    "service": ("services", Service),
}
#: Fields that hold the key of another entity (kept as ``parents`` in the store).
PARENT_FIELDS = ("region", "zone", "project", "host", "network", "subnet", "vm", "namespace", "node")


def check_kind(kind: str) -> str:
    """Return ``kind`` or raise ValueError listing the known kinds."""
    if kind not in KIND_SPECS:
        raise ValueError(f"unknown inventory kind {kind!r}; expected one of {', '.join(KIND_SPECS)}")
    return kind


def entities_of(snapshot: Snapshot) -> Iterator[tuple[str, Any]]:
    """Every ``(kind, entity)`` of a snapshot."""
    for kind, (attr, _) in KIND_SPECS.items():
        for entity in getattr(snapshot, attr):
            yield kind, entity


def display_name(entity: Any) -> str:
    """The entity's name (an interface: its device name, else its MAC)."""
    name = getattr(entity, "name", None)
    if name is not None:
        return str(name)
    return str(getattr(entity, "device", "") or getattr(entity, "mac", "") or entity.key)


def to_attrs(entity: Any) -> str:
    """Canonical JSON of an entity (equal entities give equal text)."""
    data = {f.name: getattr(entity, f.name) for f in dataclasses.fields(entity)}
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def parents_of(entity: Any) -> dict[str, str]:
    """The non-empty references of an entity to others (``{"project": key, ...}``)."""
    return {f: str(getattr(entity, f)) for f in PARENT_FIELDS if getattr(entity, f, "")}


def _tuples(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def from_attrs(kind: str, attrs: str) -> Any:
    """Rebuild the entity of ``kind`` from :func:`to_attrs` text (unknown fields ignored)."""
    cls = KIND_SPECS[check_kind(kind)][1]
    data = json.loads(attrs)
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: _tuples(v) for k, v in data.items() if k in names})


def empty_snapshot(source: str, taken_at: int) -> Snapshot:
    """A snapshot with no entities."""
    return Snapshot(source=source, taken_at=taken_at)


def snapshot_from(source: str, taken_at: int, entities: Iterator[tuple[str, Any]]) -> Snapshot:
    """Build a snapshot from ``(kind, entity)`` pairs."""
    snap = Snapshot(source=source, taken_at=taken_at)
    for kind, entity in entities:
        getattr(snap, KIND_SPECS[kind][0]).append(entity)
    return snap

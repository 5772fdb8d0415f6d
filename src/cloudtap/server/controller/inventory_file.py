"""A static inventory snapshot read from a file (re-read when it changes).

Used when no inventory service is wired into the server (``app.state.inventory``). Parsed by the
inventory's static connector (docs/inventory.md) when installed; otherwise the file holds the
:class:`~cloudtap.inventory.model.Snapshot` fields: ``hosts: [{key, name, address}]``, ``vms: [{key, name,
project, host, state, tags}]``, ``interfaces: [{key, mac, ips, vm, subnet, device}]``, ``projects``, ``subnets``...
"""

from __future__ import annotations

import dataclasses
import time
import typing
from pathlib import Path
from typing import Any

import yaml

from cloudtap.errors import ConfigError
from cloudtap.inventory import model
from cloudtap.inventory.model import Snapshot

_ENTITY = {f.name: f for f in dataclasses.fields(Snapshot) if f.name not in ("source", "taken_at")}


def snapshot_from_dict(doc: dict[str, Any], source: str = "static") -> Snapshot:
    """Build a Snapshot from plain data (lists become tuples where the model wants them).

    Raises:
        ConfigError: an unknown section or entity field (named).
    """
    unknown = sorted(set(doc) - set(_ENTITY) - {"source", "taken_at"})
    if unknown:
        raise ConfigError(f"inventory: unknown section(s) {unknown}; expected {sorted(_ENTITY)}")
    snap = Snapshot(source=str(doc.get("source", source)), taken_at=int(doc.get("taken_at") or time.time_ns()))
    hints = typing.get_type_hints(Snapshot, vars(model))
    for name in _ENTITY:
        cls = typing.get_args(hints[name])[0]
        items = []
        for i, item in enumerate(doc.get(name) or []):
            fields = {f.name for f in dataclasses.fields(cls)}
            bad = sorted(set(item) - fields)
            if bad:
                raise ConfigError(f"inventory: {name}[{i}]: unknown field(s) {bad}")
            values = {k: (tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list) else v)
                      for k, v in item.items()}  # fmt: skip
            if "mac" in values:
                values["mac"] = str(values["mac"]).lower()
            items.append(cls(**values))
        setattr(snap, name, items)
    return snap


def _load(path: Path) -> Snapshot:
    """The inventory's own static loader (docs/inventory.md: YAML or CSV) when present, else plain Snapshot fields."""
    try:
        from cloudtap.inventory.connectors.static import load_static
    except ImportError:
        return snapshot_from_dict(yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    return load_static(path)


class SnapshotFile:
    """``current()`` returns the file's snapshot, re-reading it when its modification time changes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._mtime: float | None = None
        self._snap = Snapshot(source="static", taken_at=0)
        self.error = ""

    def current(self) -> Snapshot:
        """The snapshot (the last good one when the file became unreadable; ``error`` says why)."""
        try:
            mtime = self.path.stat().st_mtime_ns
            if mtime != self._mtime:
                self._snap = _load(self.path)
                self._mtime = mtime
                self.error = ""
        except (OSError, yaml.YAMLError, ConfigError, TypeError) as exc:
            self.error = f"{self.path}: {exc}"
        return self._snap

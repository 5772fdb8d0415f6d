"""The interfaces of the packet store: stable store ids, names, VM domains, and ``interfaces.json``.

Capture point ids are not stable across restarts; the store gives each interface it keeps packets of
an id of its own and records it (with the VM domain and link types seen) in ``interfaces.json``. The
:class:`InterfaceTable` maps capture point ids to store ids (or "not kept", by the policy's globs).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from cloudtap.agent.identity import ObservationPoints
    from cloudtap.agent.packet_store import PacketStoreStats

INTERFACES_FILE = "interfaces.json"
UNKNOWN = -1  #: store id of a capture point not resolved yet
NOT_KEPT = -2  #: store id of a capture point the policy does not keep
#: Names a capture point id: ``point_id -> (interface name, VM domain or None)``.
PointNamer = Callable[[int], tuple[str, str | None]]


@dataclasses.dataclass
class StoredInterface:
    """An interface whose packets are stored, with the store's own stable id."""

    store_id: int
    name: str
    domain: str | None = None
    linktypes: list[int] = dataclasses.field(default_factory=list)

    @property
    def label(self) -> str:
        """``domain/interface`` when the VM is known, else the interface."""
        return f"{self.domain}/{self.name}" if self.domain else self.name

    def matches(self, patterns: Sequence[str] | None) -> bool:
        """Whether a query for ``patterns`` (names, VM domains, labels or globs; None: all) covers it."""
        if not patterns:
            return True
        for p in patterns:
            if fnmatch.fnmatchcase(self.name, p) or (self.domain and fnmatch.fnmatchcase(self.domain, p)):
                return True
            if fnmatch.fnmatchcase(self.label, p):
                return True
        return False


def is_selected(name: str, domain: str | None, globs: Sequence[str]) -> bool:
    """Whether the store policy (globs of interface names or VM domains) keeps this interface's packets."""
    return any(fnmatch.fnmatchcase(name, g) or bool(domain and fnmatch.fnmatchcase(domain, g)) for g in globs)


def read_interfaces(directory: Path) -> Iterator[StoredInterface]:
    """The interfaces recorded in ``directory/interfaces.json`` (nothing when there is no such file).

    Raises:
        OSError, ValueError, KeyError: the file is unreadable (after yielding the entries before the fault).
    """
    meta = directory / INTERFACES_FILE
    if not meta.is_file():
        return
    for item in json.loads(meta.read_text(encoding="utf-8"))["interfaces"]:
        yield StoredInterface(int(item["id"]), item["name"], item.get("domain"), list(item.get("linktypes", [])))


def write_interfaces(directory: Path, interfaces: Iterable[StoredInterface]) -> None:
    """Replace ``directory/interfaces.json`` atomically.

    Raises:
        OSError: the file cannot be written.
    """
    items = [dataclasses.asdict(i) | {"id": i.store_id} for i in interfaces]
    tmp = directory / (INTERFACES_FILE + ".tmp")
    tmp.write_text(json.dumps({"interfaces": items}, indent=1), encoding="utf-8")
    os.replace(tmp, directory / INTERFACES_FILE)


class InterfaceTable:
    """The stored interfaces and the store id of each capture point (the caller holds the store's lock)."""

    def __init__(self, directory: Path, names: PointNamer, stats: PacketStoreStats) -> None:
        self.directory = directory
        self.interfaces: list[StoredInterface] = []
        self._names = names
        self._stats = stats
        self._by_name: dict[str, StoredInterface] = {}
        self._lut = np.full(1 << 16, UNKNOWN, np.int32)
        self._lut_refreshed = time.monotonic()

    def load(self) -> None:
        """Add the interfaces of ``interfaces.json`` (an unreadable file is reported in the stats)."""
        try:
            for iface in read_interfaces(self.directory):
                self.interfaces.append(iface)
                self._by_name[iface.name] = iface
        except (OSError, ValueError, KeyError) as exc:
            self._stats.last_error = f"interfaces.json unreadable: {exc}"

    def snapshot(self) -> list[StoredInterface]:
        """Copies of the stored interfaces."""
        return [dataclasses.replace(i, linktypes=list(i.linktypes)) for i in self.interfaces]

    def store_ids(self, point_ids: np.ndarray, globs: Sequence[str]) -> np.ndarray:
        """The store id of each capture point id (``NOT_KEPT`` where ``globs`` do not select it)."""
        sids: np.ndarray = self._lut[point_ids]
        if bool((sids == UNKNOWN).any()):
            self._resolve(point_ids[sids == UNKNOWN], globs)
            sids = self._lut[point_ids]
        return sids

    def forget_points(self) -> None:
        """Resolve every capture point again (new policy, or names that may have changed)."""
        self._lut[:] = UNKNOWN

    def refresh_names(self, now: float, every_s: float = 10.0) -> None:
        """Forget the capture points when ``every_s`` have passed since the last time (VM identity)."""
        if now - self._lut_refreshed >= every_s:
            self._lut[:] = UNKNOWN
            self._lut_refreshed = now

    def add_linktypes(self, pairs: np.ndarray) -> None:
        """Record the ``store_id << 16 | linktype`` pairs of a block."""
        changed = False
        for key in pairs.tolist():
            iface = self.interfaces[key >> 16]
            if (key & 0xFFFF) not in iface.linktypes:
                iface.linktypes.append(key & 0xFFFF)
                changed = True
        if changed:
            self._save()

    def _resolve(self, point_ids: np.ndarray, globs: Sequence[str]) -> None:
        for pid in np.unique(point_ids).tolist():
            name, domain = self._names(int(pid))
            if not is_selected(name, domain, globs):
                self._lut[pid] = NOT_KEPT
                continue
            iface = self._by_name.get(name)
            if iface is None:
                iface = StoredInterface(len(self.interfaces), name, domain)
                self.interfaces.append(iface)
                self._by_name[name] = iface
                self._save()
            elif domain and iface.domain != domain:
                iface.domain = domain
                self._save()
            self._lut[pid] = iface.store_id

    def _save(self) -> None:
        try:
            write_interfaces(self.directory, self.interfaces)
        except OSError as exc:
            self._stats.last_error = f"interfaces.json: {exc}"


def point_namer(points: ObservationPoints, fallback: str | None = None) -> PointNamer:
    """Name capture point ids from the agent's observation points.

    Args:
        points: the agent's points (interface and VM domain per id).
        fallback: name of ids no point describes (replay mode: the file name); ``if<id>`` if None.
    """

    def names(pid: int) -> tuple[str, str | None]:
        known = points.all()
        if pid < len(known):
            return known[pid].interface, known[pid].domain
        if fallback:
            return (fallback if pid == 0 else f"{fallback}#{pid}"), None
        return f"if{pid}", None

    return names

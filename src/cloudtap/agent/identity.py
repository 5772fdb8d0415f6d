"""Observation points: stable ids for capture interfaces and the VM behind each one.

Annotating a flow batch also teaches the points' :class:`~cloudtap.agent.port_addresses.PortAddresses`
which IPs each VM uses (``points.addresses``; vectorised over the batch). In mirror mode
(``points.mirror`` set) the VM of each record comes from the mirror session / VNI / VLAN mapping and
the inner MACs instead (:mod:`cloudtap.agent.mirror_attribution`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from cloudtap.agent.mirror_attribution import MirrorAttribution
from cloudtap.agent.port_addresses import PortAddresses, mac_to_int


@dataclass(frozen=True)
class ObservationPoint:
    """Where packets were seen: one capture interface, and the VM it belongs to when known."""

    point_id: int
    interface: str
    vm_mac: str | None = None
    domain: str | None = None
    domain_uuid: str | None = None


class ObservationPoints:
    """Assigns each interface name a stable small id (it survives removal and re-adding)."""

    def __init__(self, addresses: PortAddresses | None = None, mirror: MirrorAttribution | None = None) -> None:
        self.mirror = mirror  #: mirror mode: per-record VM attribution (replaces the interface's VM)
        self._lock = threading.Lock()
        self._by_name: dict[str, ObservationPoint] = {}
        self._by_id: list[ObservationPoint] = []
        self._vm_macs = np.zeros(0, np.uint64)  # VM MAC by point id (0: none)
        self.addresses = addresses if addresses is not None else PortAddresses()  #: IPs seen per point

    def register(
        self, interface: str, vm_mac: str | None = None, domain: str | None = None, domain_uuid: str | None = None
    ) -> ObservationPoint:
        """Return the point of ``interface``, creating it or refreshing its VM identity."""
        with self._lock:
            old = self._by_name.get(interface)
            point_id = old.point_id if old else len(self._by_id)
            point = ObservationPoint(point_id, interface, vm_mac, domain, domain_uuid)
            if old is None:
                self._by_id.append(point)
            else:
                self._by_id[point_id] = point
            self._by_name[interface] = point
            if old is None or old.vm_mac != vm_mac:
                self._vm_macs = np.array([mac_to_int(p.vm_mac) for p in self._by_id], np.uint64)
        if old is not None and old.vm_mac != vm_mac:
            self.addresses.forget(point_id)  # another VM behind this interface now
        return point

    def ids_for(self, names: list[str]) -> np.ndarray:
        """Map a source's interface list (position -> name) to point ids."""
        return np.array([self.register(n).point_id if n not in self._by_name else self._by_name[n].point_id
                         for n in names], dtype=np.uint16)  # fmt: skip

    def annotate(self, table: pa.Table, column: str = "interface") -> pa.Table:
        """Add ``interface_name``, ``vm_domain`` and ``vm_mac`` columns looked up from ``column``.

        With ``mirror`` set they come from the mirror mapping of each record (see the module doc).
        """
        if self.mirror is not None:
            return self.mirror.annotate(table)
        with self._lock:
            points = list(self._by_id)
        ids = table[column].to_numpy()
        names = np.array([p.interface for p in points] + [""], dtype=object)
        domains = np.array([p.domain or "" for p in points] + [""], dtype=object)
        macs = np.array([p.vm_mac or "" for p in points] + [""], dtype=object)
        idx = np.where(ids < len(points), ids, len(points))
        table = table.append_column("interface_name", pa.array(names[idx], pa.string()))
        table = table.append_column("vm_domain", pa.array(domains[idx], pa.string()))
        if column == "interface":
            self.addresses.observe(table, self._vm_macs)  # skips tables without MACs (edges)
        return table.append_column("vm_mac", pa.array(macs[idx], pa.string()))

    def all(self) -> list[ObservationPoint]:
        """Every point registered so far."""
        with self._lock:
            return list(self._by_id)

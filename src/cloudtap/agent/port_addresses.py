"""IPs seen on each VM port: learned from the flow records the agent already produces.

On a VM's tap, the VM-side address of a flow is the one whose MAC is the VM's own MAC (the guest MAC
of the libvirt domain): ``client_ip`` when ``client_mac`` is the VM's, ``server_ip`` when
``server_mac`` is. Each batch of records is reduced with Arrow/numpy (no Python loop per record) to
one row per (port, IP) with its first and last time seen, then merged into a bounded table: at most
``max_ips_per_port`` IPs per port (the most recently seen win) and ``max_ports`` ports (the ports seen
longest ago go first). Unspecified (``0.0.0.0``, ``::``) and IPv6 link-local addresses are not kept.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

#: IPs kept per port (a VM with more addresses reports its most recently seen ones)
MAX_IPS_PER_PORT = 16
#: ports kept (far more than the VM ports of one host)
MAX_PORTS = 4096
#: an IP not seen for this long is dropped
MAX_AGE_S = 86_400.0
#: flow table columns used
COLUMNS = ("interface", "client_mac", "server_mac", "client_ip", "server_ip", "first_ns", "last_ns")
_IGNORED = pa.array(["", "::", "0.0.0.0"], pa.string())


@dataclass(frozen=True)
class SeenAddress:
    """One IP seen as the VM side of a port's traffic."""

    ip: str
    first_seen_ns: int
    last_seen_ns: int


def mac_to_int(mac: str | None) -> int:
    """``aa:bb:cc:dd:ee:ff`` as an integer (0 when None or malformed)."""
    try:
        return int((mac or "").replace(":", "").replace("-", ""), 16) if mac else 0
    except ValueError:
        return 0


def vm_side(table: pa.Table, vm_macs: np.ndarray) -> pa.Table:
    """``(point, ip, first_ns, last_ns)`` of every record side whose MAC is its port's VM MAC.

    Args:
        table: flow records (:data:`COLUMNS`), ``interface`` holding observation point ids.
        vm_macs: VM MAC (as an integer, 0: unknown) by point id.
    """
    empty = pa.table({"point": pa.array([], pa.int64()), "ip": pa.array([], pa.string()),
                      "first_ns": pa.array([], pa.int64()), "last_ns": pa.array([], pa.int64())})  # fmt: skip
    if table.num_rows == 0 or len(vm_macs) == 0:
        return empty
    ids = np.asarray(table["interface"].to_numpy(), dtype=np.int64)
    vm = np.where(ids < len(vm_macs), vm_macs[np.minimum(ids, len(vm_macs) - 1)], 0).astype(np.uint64)
    known = vm != 0
    parts = []
    for side in ("client", "server"):
        mac = np.asarray(table[f"{side}_mac"].to_numpy(), dtype=np.uint64)
        rows = np.flatnonzero(known & (mac == vm))
        if len(rows):
            idx = pa.array(rows)
            parts.append(pa.table({"point": pa.array(ids[rows]), "ip": pc.take(table[f"{side}_ip"], idx),
                                   "first_ns": pc.take(table["first_ns"], idx).cast(pa.int64()),
                                   "last_ns": pc.take(table["last_ns"], idx).cast(pa.int64())}))  # fmt: skip
    if not parts:
        return empty
    found = pa.concat_tables(parts)
    keep = pc.and_(pc.invert(pc.is_in(found["ip"], value_set=_IGNORED)),
                   pc.invert(pc.starts_with(found["ip"], "fe80:")))  # fmt: skip
    return found.filter(pc.fill_null(keep, False))


def top_per_point(found: pa.Table, limit: int) -> pa.Table:
    """One row per (point, ip) with the earliest first and latest last time, at most ``limit`` per point
    (the most recently seen), sorted by point then latest first."""
    grouped = found.group_by(["point", "ip"]).aggregate([("first_ns", "min"), ("last_ns", "max")])
    grouped = grouped.sort_by([("point", "ascending"), ("last_ns_max", "descending"), ("ip", "ascending")])
    points = grouped["point"].to_numpy()
    n = len(points)
    if n == 0:
        return grouped
    starts = np.ones(n, bool)
    starts[1:] = points[1:] != points[:-1]
    first_of_group = np.maximum.accumulate(np.where(starts, np.arange(n), 0))
    return grouped.filter(pa.array((np.arange(n) - first_of_group) < limit))


class PortAddresses:
    """The IPs seen on each port (by observation point id), bounded; thread-safe.

    Args:
        max_ips_per_port: IPs kept per port.
        max_ports: ports kept.
        max_age_s: IPs not seen for this long are dropped.
        clock: ns clock (tests).
    """

    def __init__(self, max_ips_per_port: int = MAX_IPS_PER_PORT, max_ports: int = MAX_PORTS,
                 max_age_s: float = MAX_AGE_S, clock: Callable[[], int] = time.time_ns) -> None:  # fmt: skip
        self.max_ips_per_port = max_ips_per_port
        self.max_ports = max_ports
        self.max_age_s = max_age_s
        self.clock = clock
        self._lock = threading.Lock()
        self._ports: dict[int, dict[str, list[int]]] = {}  # point -> ip -> [first_ns, last_ns]

    def observe(self, table: pa.Table, vm_macs: np.ndarray) -> int:
        """Learn from one batch of flow records; returns the number of (port, IP) rows merged."""
        if any(c not in table.column_names for c in COLUMNS):
            return 0
        best = top_per_point(vm_side(table, vm_macs), self.max_ips_per_port)
        if best.num_rows == 0:
            return 0
        rows = zip(best["point"].to_pylist(), best["ip"].to_pylist(), best["first_ns_min"].to_pylist(),
                   best["last_ns_max"].to_pylist(), strict=True)  # fmt: skip
        with self._lock:
            touched = set()
            for point, ip, first, last in rows:  # bounded: max_ips_per_port per port in the batch
                ips = self._ports.setdefault(point, {})
                old = ips.get(ip)
                ips[ip] = [min(old[0], first), max(old[1], last)] if old else [first, last]
                touched.add(point)
            for point in touched:
                ips = self._ports[point]
                if len(ips) > self.max_ips_per_port:
                    kept = sorted(ips.items(), key=lambda kv: kv[1][1], reverse=True)[: self.max_ips_per_port]
                    self._ports[point] = dict(kept)
            if len(self._ports) > self.max_ports:
                newest = {p: max(v[1] for v in ips.values()) for p, ips in self._ports.items()}
                for point in sorted(newest, key=newest.__getitem__)[: len(self._ports) - self.max_ports]:
                    del self._ports[point]
        return int(best.num_rows)

    def seen(self) -> dict[int, list[SeenAddress]]:
        """Point id -> its IPs, most recently seen first (IPs older than ``max_age_s`` are dropped)."""
        oldest = self.clock() - int(self.max_age_s * 1e9)
        out: dict[int, list[SeenAddress]] = {}
        with self._lock:
            for point, ips in list(self._ports.items()):
                for ip in [ip for ip, (_, last) in ips.items() if last < oldest]:
                    del ips[ip]
                if not ips:
                    del self._ports[point]
                    continue
                out[point] = [SeenAddress(ip, first, last)
                              for ip, (first, last) in sorted(ips.items(), key=lambda kv: (-kv[1][1], kv[0]))]  # fmt: skip
        return out

    def forget(self, point: int) -> None:
        """Drop what a port learned (its VM changed)."""
        with self._lock:
            self._ports.pop(point, None)

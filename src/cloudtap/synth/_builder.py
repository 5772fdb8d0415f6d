"""Accumulating session columns: the shared machinery of services and incidents."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cloudtap.synth import _dtypes as dt
from cloudtap.synth.apps import AppTables, build_tables, min_sizes
from cloudtap.synth.cloud import Cloud
from cloudtap.synth.scenario import Scenario, ServiceSpec

EPHEMERAL_LOW = 32768
EPHEMERAL_COUNT = 61000 - 32768

_COLUMNS: dict[str, str] = {
    "start_ns": "i8",
    "client": "i4",
    "server": "i4",
    "proto": "u1",
    "kind": "u1",
    "close": "u1",
    "svc": "i4",
    "incident": "i4",
    "hs": "i8",
    "hc": "i8",
    "zw": "u1",
    "retries": "u1",
    "bulk_bytes": "i8",
    "ns_per_byte": "f8",
    "sport": "u2",
    "slow": "i4",
}


@dataclass
class SessionSet:
    """All sessions of a scenario, one index per session, sorted by start time.

    Attributes:
        cols: the per-session columns (see ``_COLUMNS``) plus ``cport``.
        svc_names: name of each row of ``params`` (service or incident).
        incident_names: names referenced by ``cols["incident"]`` (-1: none).
        params: float64 [n_svc, N_PARAMS] per-service behaviour table for the kernels.
        kernel_seeds: seeds of the TCP and the UDP/ICMP planning kernels (drawn from the scenario seed).
        apps: application payload tables, one row per row of ``params``.
        windows: int64 [n, 3] contention windows: effect (``cols["slow"]``), from ns, to ns.
        window_srv: float64 [n, 2] server time range (ns) inside each window.
    """

    cols: dict[str, np.ndarray]
    svc_names: list[str]
    incident_names: list[str]
    params: np.ndarray
    kernel_seeds: tuple[int, int] = (1, 2)
    apps: AppTables | None = None
    windows: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.int64))
    window_srv: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float64))

    def __len__(self) -> int:
        return int(self.cols["start_ns"].shape[0])


class SessionBuilder:
    """Accumulates session columns from services and incidents."""

    def __init__(self, scenario: Scenario, cloud: Cloud, rng: np.random.Generator) -> None:
        self.sc = scenario
        self.cloud = cloud
        self.rng = rng
        self.parts: list[dict[str, np.ndarray]] = []
        self.rows: list[np.ndarray] = []
        self.svc_names: list[str] = []
        self.incident_names: list[str] = []
        self.specs: list[ServiceSpec | None] = []
        self.effects: list[tuple[int, np.ndarray]] = []  #: contention: (service row, server VMs)
        self.windows: list[tuple[int, int, int, float, float]] = []  #: effect, from, to, server ns range

    def add_row(self, name: str, row: np.ndarray, spec: ServiceSpec | None = None) -> int:
        """Register a behaviour row (service or incident); returns its index."""
        self.svc_names.append(name)
        self.rows.append(row)
        self.specs.append(spec)
        return len(self.rows) - 1

    def _rtt(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        rtt = self.sc.rtt
        hs = np.maximum((self.rng.uniform(*rtt.server_us, n) * 1000).astype(np.int64), 1000)
        hc = np.maximum((self.rng.uniform(*rtt.client_us, n) * 1000).astype(np.int64), 1000)
        return hs, hc

    def add(self, n: int, **cols: Any) -> None:
        """Append ``n`` sessions; unnamed columns are zero (incident -1), RTTs are drawn."""
        hs, hc = self._rtt(n)
        part = {k: np.zeros(n, dtype=v) for k, v in _COLUMNS.items()}
        part["hs"], part["hc"] = hs, hc
        part["incident"][:] = -1
        for key, value in cols.items():
            part[key][:] = value
        self.parts.append(part)

    def poisson_starts(self, rate: float, t0: float, t1: float) -> np.ndarray:
        """Absolute start times of Poisson arrivals at ``rate``/s between offsets t0 and t1 (s)."""
        n = int(self.rng.poisson(rate * (t1 - t0)))
        offs = np.sort(self.rng.uniform(t0, t1, n))
        return self.sc.start_ns + (offs * 1e9).astype(np.int64)

    def finish(self) -> SessionSet:
        """Sort all sessions by start, hand out client ports, freeze the behaviour table."""
        if self.parts:
            cols = {k: np.concatenate([p[k] for p in self.parts]).astype(v) for k, v in _COLUMNS.items()}
        else:
            cols = {k: np.zeros(0, v) for k, v in _COLUMNS.items()}
        order = np.argsort(cols["start_ns"], kind="stable")
        cols = {k: v[order] for k, v in cols.items()}
        cols["cport"] = _ephemeral_ports(cols["client"], self.cloud.n_vms, self.rng)
        icmp = cols["kind"] == dt.KIND_ICMP
        cols["sport"][icmp] = cols["cport"][icmp]  # echo: both "ports" are the identifier
        cols["slow"][:] = -1
        for k, (row, servers) in enumerate(self.effects):
            cols["slow"][(cols["svc"] == row) & np.isin(cols["server"], servers)] = k
        params = np.vstack(self.rows) if self.rows else np.zeros((1, dt.N_PARAMS))
        apps = build_tables(list(zip(self.svc_names, self.specs, strict=True)))
        for r in range(len(self.rows)):
            need_req, need_resp = min_sizes(apps, r)  # messages never smaller than their protocol needs
            params[r, dt.P_REQB_MIN : dt.P_REQB_MAX + 1] = np.maximum(
                params[r, dt.P_REQB_MIN : dt.P_REQB_MAX + 1], need_req
            )
            params[r, dt.P_RESPB_MIN : dt.P_RESPB_MAX + 1] = np.maximum(
                params[r, dt.P_RESPB_MIN : dt.P_RESPB_MAX + 1], need_resp
            )
        seeds = (int(self.rng.integers(1, 2**31)), int(self.rng.integers(1, 2**31)))
        win = np.asarray([w[:3] for w in self.windows], np.int64).reshape(-1, 3)
        srv = np.asarray([w[3:] for w in self.windows], np.float64).reshape(-1, 2)
        return SessionSet(cols, self.svc_names, self.incident_names, params, seeds, apps, win, srv)


def _ephemeral_ports(client: np.ndarray, n_vms: int, rng: np.random.Generator) -> np.ndarray:
    """Client ports handed out in session order per client VM, from a random base, wrapping."""
    base = rng.integers(0, EPHEMERAL_COUNT, max(n_vms, 1))
    order = np.argsort(client, kind="stable")
    sorted_client = client[order]
    n = client.shape[0]
    rank = np.arange(n)
    if n:
        group_start = np.r_[0, np.flatnonzero(np.diff(sorted_client)) + 1]
        sizes = np.diff(np.r_[group_start, n])
        rank = rank - np.repeat(group_start, sizes)
    ports = np.empty(n, np.uint16)
    ports[order] = EPHEMERAL_LOW + (base[sorted_client] + rank) % EPHEMERAL_COUNT
    return ports

"""Synthetic clouds with planted findings (ground truth) and a quiet control, imported like ``cloudtap import``.

``planted()`` is a 30-minute cloud with one planted condition per kind (subject and window below, in
:data:`TRUTH`); ``quiet()`` is the same cloud's normal traffic only, over three hours. Identity ids
(project, vm, subnet) are filled from the synthetic inventory as an inventory would; ``DictNames``
names them. Each dataset is built once per test session and cached as parquet.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from cloudtap.server.store.base import BatchKey
from dict_names import DictNames  # noqa: F401 - the tests import it from here

KINDS = ("flows", "edges_1s", "edges_60s")
START = "2026-11-20T00:00:00Z"
MIN = 60

CLOUD = {
    "underlay": "10.0.0.0/24",
    "hosts": 2,
    "projects": [
        {"name": "shop", "subnet": "10.10.1.0/24", "vms": [
            {"role": "lb"}, {"role": "web", "count": 3}, {"role": "app", "count": 2}, {"role": "db"}]},
        {"name": "analytics", "subnet": "10.10.2.0/24", "vms": [{"role": "api"}, {"role": "worker"}]},
        {"name": "infra", "subnet": "10.10.3.0/24", "vms": [{"role": "dns"}, {"role": "backup"}, {"role": "bastion"}]},
    ],
}  # fmt: skip
NORMAL = [
    {"name": "http", "clients": "shop/lb", "servers": "shop/web", "port": 80, "rate": 2.0, "requests": [1, 4],
     "request_bytes": [200, 900], "response_bytes": [300, 8000]},
    {"name": "app-api", "clients": "shop/web", "servers": "shop/app", "port": 8080, "rate": 1.0,
     "request_bytes": [150, 1200], "response_bytes": [200, 6000]},
    {"name": "postgres", "clients": "shop/app", "servers": "shop/db", "port": 5432, "rate": 1.0, "requests": [2, 8],
     "request_bytes": [60, 600], "response_bytes": [80, 3000]},
    {"name": "dns", "proto": "udp", "clients": "*", "servers": "infra/dns", "port": 53, "rate": 2.0,
     "request_bytes": [28, 60], "response_bytes": [44, 220]},
    {"name": "etl", "clients": "analytics/worker", "servers": "analytics/api", "port": 9000, "rate": 0.2,
     "request_bytes": [5000, 20000], "response_bytes": [100, 400]},
]  # fmt: skip
PLANTED_SERVICES = [
    # lb_imbalance: web-01 gets most of the lb's port-80 sessions
    {"name": "http-sticky", "clients": "shop/lb", "servers": "shop/web-01", "port": 80, "rate": 4.0,
     "request_bytes": [200, 900], "response_bytes": [300, 8000]},
    # isolation_crossing: analytics reaches shop's database (a rule forbids analytics <-> shop)
    {"name": "crossing", "clients": "analytics/worker", "servers": "shop/db", "port": 5432, "rate": 0.05,
     "request_bytes": [200, 800], "response_bytes": [2000, 20000]},
    # handshake_failures (burst of refused sessions), retransmission_spike (burst of lossy ones), burst (bulk)
    {"name": "flaky", "clients": "shop/app-01", "servers": "analytics/api", "port": 7000, "rate": 0.01,
     "faults": {"refused": 0.95}},
    {"name": "lossy", "clients": "shop/web-02", "servers": "shop/app-02", "port": 9100, "rate": 0.01,
     "request_bytes": [100, 200], "response_bytes": [60000, 120000], "faults": {"loss": 0.15}},
    {"name": "bulk", "clients": "shop/app-02", "servers": "shop/db", "port": 6000, "rate": 0.05,
     "request_bytes": [1000, 2000], "response_bytes": [100000, 200000]},
]  # fmt: skip
PLANTED_INCIDENTS = [
    {"kind": "backup", "name": "backup", "from_vm": "db-01", "to_vm": "backup-01", "at": "0s", "every": "5m",
     "duration": "60s", "rate_mbps": 4, "port": 873},
    {"kind": "backup", "name": "new-edge", "from_vm": "api-01", "to_vm": "backup-01", "at": "15m", "duration": "60s",
     "rate_mbps": 0.4, "port": 9999},
    {"kind": "backup", "name": "new-port", "from_vm": "app-01", "to_vm": "db-01", "at": "16m", "duration": "30s",
     "rate_mbps": 0.2, "port": 5433},
    {"kind": "scan", "name": "scan", "from_vm": "bastion-01", "targets": "shop/*", "ports": [1, 100], "rate_pps": 100,
     "at": "18m"},
    {"kind": "burst", "name": "failures", "service": "flaky", "multiplier": 2000, "at": "12m", "duration": "120s"},
    {"kind": "burst", "name": "losses", "service": "lossy", "multiplier": 100, "at": "22m", "duration": "120s"},
    {"kind": "burst", "name": "bulk-burst", "service": "bulk", "multiplier": 60, "at": "26m", "duration": "60s"},
]  # fmt: skip


@dataclass(frozen=True)
class Truth:
    """A planted condition: its kind, subject and window (minutes from the start)."""

    kind: str
    client: str  #: VM name ("" for a service)
    server: str  #: VM name, or "" (a scan's source has none)
    port: int | None
    start_min: float
    end_min: float


TRUTH = (
    Truth("periodic_transfer", "db-01", "backup-01", 873, 0, 21),
    Truth("burst", "db-01", "backup-01", 873, 0, 26),  # each push bursts; 5 min apart: one finding, extended
    Truth("new_edge", "api-01", "backup-01", 9999, 15, 16),
    Truth("new_port", "app-01", "db-01", 5433, 16, 17),
    Truth("scan", "bastion-01", "", None, 18, 19),
    Truth("handshake_failures", "app-01", "api-01", 7000, 12, 14),
    Truth("retransmission_spike", "web-02", "app-02", 9100, 22, 24),
    Truth("burst", "app-02", "db-01", 6000, 26, 27),
    Truth("lb_imbalance", "", "", 80, 0, 30),
    Truth("isolation_crossing", "worker-01", "db-01", 5432, 0, 30),
)


@dataclass
class Dataset:
    """What the store holds, and the inventory behind it."""

    tables: dict[str, pa.Table]
    inventory: dict[str, Any]  #: kind -> {name: id}; "ip" -> {ip: vm name}; "start_s"
    key: BatchKey

    @property
    def start_s(self) -> int:
        return int(self.inventory["start_s"])

    def ip_of(self, vm: str) -> str:
        return next(ip for ip, name in self.inventory["ip"].items() if name == vm)


def scenario(name: str, duration: str, planted: bool) -> dict[str, Any]:
    """The scenario document."""
    return {
        "name": name, "seed": 14, "start": START, "duration": duration, "cloud": CLOUD,
        "faults": {"loss": 0.001, "refused": 0.002, "unanswered": 0.001},
        "services": NORMAL + (PLANTED_SERVICES if planted else []),
        "incidents": PLANTED_INCIDENTS if planted else [],
    }  # fmt: skip


def _build(doc: dict[str, Any], pcap: Path) -> tuple[dict[str, pa.Table], dict[str, Any]]:
    from cloudtap.server.importer import import_tables
    from cloudtap.synth import write_pcap
    from cloudtap.synth.scenario import scenario_from_dict

    sc = scenario_from_dict(doc)
    inv = write_pcap(sc, pcap).inventory
    ids: dict[str, Any] = {
        "project": {p["name"]: i + 1 for i, p in enumerate(inv["projects"])},
        "vm": {v["name"]: i + 1 for i, v in enumerate(inv["vms"])},
        "subnet": {p["subnet"]: i + 1 for i, p in enumerate(inv["projects"])},
    }
    by_ip = {v["ip"]: v for v in inv["vms"]}
    ids["ip"] = {ip: v["name"] for ip, v in by_ip.items()}
    ids["start_s"] = sc.start_ns // 1_000_000_000
    subnet_of = {p["name"]: p["subnet"] for p in inv["projects"]}
    imported = import_tables([pcap])
    pcap.unlink()
    tables = {}
    for kind, t in imported.tables.items():
        for side in ("client", "server"):
            vms = [by_ip.get(ip) for ip in t[f"{side}_ip"].to_pylist()]
            cols = {
                "vm": [ids["vm"][v["name"]] if v else 0 for v in vms],
                "project": [ids["project"][v["project"]] if v else 0 for v in vms],
                "subnet": [ids["subnet"][subnet_of[v["project"]]] if v else 0 for v in vms],
            }
            for f, values in cols.items():
                t = t.append_column(f"{side}_{f}_id", pa.array(values, pa.uint32()))
        tables[kind] = t
    return tables, ids


def load(cache: Path, name: str, duration: str, planted: bool) -> Dataset:
    """The dataset, built on the first call and read from ``cache`` afterwards."""
    cache.mkdir(parents=True, exist_ok=True)
    done = cache / "inventory.json"
    if not done.exists():
        tables, ids = _build(scenario(name, duration, planted), cache / "synth.pcap")
        for kind, t in tables.items():
            pq.write_table(t, cache / f"{kind}.parquet")
        done.write_text(json.dumps(ids))
    tables = {kind: pq.read_table(cache / f"{kind}.parquet") for kind in KINDS}
    return Dataset(tables, json.loads(done.read_text()), BatchKey(f"findings-{name}", 1))


def names_of(data: Dataset) -> DictNames:
    """Names of the dataset's projects, VMs and subnets."""
    return DictNames({k: v for k, v in data.inventory.items() if k in ("project", "vm", "subnet")})

"""The analysis test dataset: a short synthetic cloud with the hourly DB backup, metered like an import.

``small-cloud`` trimmed to a few services over 3 h (00:00-03:00 UTC, 2026-11-20): ``db-01`` pushes a
backup to ``backup-01`` (rsync, port 873) at the top of every hour for 3 minutes. The tables are the
ones ``cloudtap import`` builds, with the identity ids (project, host, vm, subnet) filled from the
synthetic inventory, as an inventory would; :class:`DictNames` names them. Built once per test
session and cached as parquet under the pytest base temp directory.
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

NS = 1_000_000_000
START = "2026-11-20T00:00:00Z"
START_S = 1_763_596_800
SERVICES = ("http", "app-api", "postgres", "redis", "dns", "ntp", "ping")
KINDS = ("flows", "edges_1s", "edges_60s")
KEY = BatchKey("analyse-tests", 1)


@dataclass
class AnalyseData:
    """What the store holds, and the inventory behind it."""

    tables: dict[str, pa.Table]
    inventory: dict[str, Any]  #: kind -> {name: id}; "ip" -> {ip: vm name}

    def ip_of(self, vm: str) -> str:
        return next(ip for ip, name in self.inventory["ip"].items() if name == vm)


def _build(pcap: Path) -> tuple[dict[str, pa.Table], dict[str, Any]]:
    from cloudtap.server.importer import import_tables
    from cloudtap.synth import builtin_scenario, write_pcap
    from cloudtap.synth.scenario import with_overrides

    base = builtin_scenario("small-cloud")
    services = [s for s in base.model_dump()["services"] if s["name"] in SERVICES]
    synth = write_pcap(with_overrides(base, services=services), pcap)
    inv = synth.inventory
    ids: dict[str, Any] = {
        "project": {p["name"]: i + 1 for i, p in enumerate(inv["projects"])},
        "host": {h["name"]: i + 1 for i, h in enumerate(inv["hosts"])},
        "vm": {v["name"]: i + 1 for i, v in enumerate(inv["vms"])},
    }
    ids["subnet"] = {p["subnet"]: i + 1 for i, p in enumerate(inv["projects"])}
    by_ip = {v["ip"]: v for v in inv["vms"]}
    ids["ip"] = {ip: v["name"] for ip, v in by_ip.items()}
    project_subnet = {p["name"]: p["subnet"] for p in inv["projects"]}
    imported = import_tables([pcap])
    pcap.unlink()
    tables = {}
    for kind, t in imported.tables.items():
        for side in ("client", "server"):
            vms = [by_ip.get(ip) for ip in t[f"{side}_ip"].to_pylist()]
            cols = {
                "vm": [ids["vm"][v["name"]] if v else 0 for v in vms],
                "host": [ids["host"][v["host"]] if v else 0 for v in vms],
                "project": [ids["project"][v["project"]] if v else 0 for v in vms],
                "subnet": [ids["subnet"][project_subnet[v["project"]]] if v else 0 for v in vms],
            }
            for f, values in cols.items():
                t = t.append_column(f"{side}_{f}_id", pa.array(values, pa.uint32()))
        tables[kind] = t
    return tables, ids


def load(cache: Path) -> AnalyseData:
    """The dataset, built on the first call and read from ``cache`` afterwards."""
    cache.mkdir(parents=True, exist_ok=True)
    done = cache / "inventory.json"
    if not done.exists():
        tables, ids = _build(cache / "synth.pcap")
        for kind, t in tables.items():
            pq.write_table(t, cache / f"{kind}.parquet")
        done.write_text(json.dumps(ids))
    tables = {kind: pq.read_table(cache / f"{kind}.parquet") for kind in KINDS}
    return AnalyseData(tables, json.loads(done.read_text()))


def open_store(dsn: str, data: AnalyseData, database: str = "analyse_tests") -> Any:
    """A migrated store in ``database`` holding the dataset (inserted once: a fixed batch key)."""
    from cloudtap.server.store.clickhouse import ClickHouseStore

    store = ClickHouseStore(dsn, database=database)
    store.migrate()
    store.insert(data.tables, KEY)
    return store

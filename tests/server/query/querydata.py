"""Deterministic flow records and edges, shaped exactly as an agent ships them, for query tests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from cloudtap.meter._state import EDGE_DELTA_DTYPE
from cloudtap.meter.edges import aggregate_edges, edges_with_text
from cloudtap.meter.records import flows_to_arrow
from cloudtap.schema.address import from_text
from cloudtap.schema.flow import FLOW_DTYPE

NS = 1_000_000_000
#: 2024-03-01T00:00:00Z: data is old, like an imported capture.
T0 = 1_709_251_200 * NS
#: Data covers [T0, T0 + SPAN).
SPAN = 2 * 3600 * NS
CLIENTS = [f"10.0.{i // 8}.{i % 8 + 1}" for i in range(24)] + ["fd00::1", "fd00::2"]
SERVERS = ["10.1.0.1", "10.1.0.2", "10.1.0.3", "10.2.0.1", "192.168.7.7", "fd00:1::5"]
PORTS = np.array([5432, 443, 80, 53, 6379], np.uint16)
AGENTS = ["agent-a", "agent-b"]


@dataclass
class Dataset:
    """What was inserted: the agent-shaped tables per stream kind."""

    flows: pa.Table
    edges_1s: pa.Table
    edges_60s: pa.Table

    def kinds(self) -> dict[str, pa.Table]:
        return {"flows": self.flows, "edges_1s": self.edges_1s, "edges_60s": self.edges_60s}


def _addresses(names: list[str], idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pairs = np.array([from_text(n) for n in names], dtype=np.uint64)
    return pairs[idx, 0], pairs[idx, 1]


def _annotate(table: pa.Table, agents: np.ndarray) -> pa.Table:
    n = table.num_rows
    names = np.array(["tap0", "tap1"], dtype=object)[agents]
    table = table.append_column("interface_name", pa.array(names, pa.string()))
    table = table.append_column(
        "vm_domain", pa.array(np.array(["vm-1", ""], dtype=object)[agents], pa.string())
    )
    table = table.append_column("vm_mac", pa.array([""] * n, pa.string()))
    return table.append_column("agent_id", pa.array(np.array(AGENTS, dtype=object)[agents], pa.string()))


def make_flows(n: int, rng: np.random.Generator) -> pa.Table:
    """``n`` flow records spread over the span."""
    f = np.zeros(n, FLOW_DTYPE)
    ci = rng.integers(0, len(CLIENTS), n)
    si = rng.integers(0, len(SERVERS), n)
    v6 = np.array([":" in CLIENTS[c] or ":" in SERVERS[s] for c, s in zip(ci, si, strict=True)])
    si = np.where(v6, len(SERVERS) - 1, si)
    ci = np.where(v6, len(CLIENTS) - 1 - (ci % 2), ci)
    f["client_hi"], f["client_lo"] = _addresses(CLIENTS, ci)
    f["server_hi"], f["server_lo"] = _addresses(SERVERS, si)
    f["ip_ver"] = np.where(v6, 6, 4)
    f["flow_id"] = np.arange(1, n + 1)
    f["first_ns"] = T0 + rng.integers(0, SPAN, n)
    f["start_ns"] = f["first_ns"]
    f["last_ns"] = f["first_ns"] + rng.integers(0, 30 * NS, n)
    f["proto"] = rng.choice([6, 6, 6, 17], n)
    f["server_port"] = PORTS[rng.integers(0, len(PORTS), n)]
    f["client_port"] = rng.integers(1024, 65535, n)
    for d in ("c2s", "s2c"):
        f[f"packets_{d}"] = rng.integers(1, 500, n)
        f[f"bytes_{d}"] = f[f"packets_{d}"] * rng.integers(40, 1500, n)
        f[f"l2_bytes_{d}"] = f[f"bytes_{d}"] + 14 * f[f"packets_{d}"]
        f[f"retrans_{d}"] = rng.integers(0, 3, n) * (rng.random(n) < 0.2)
    known = rng.random(n) < 0.7
    f["rtt_client_us"] = np.where(known, rng.uniform(10, 5000, n), -1.0)
    f["rtt_server_us"] = np.where(known, rng.uniform(10, 5000, n), -1.0)
    f["record_seq"] = np.where(rng.random(n) < 0.8, 0, 1)
    f["close_type"] = rng.choice([0, 1, 1, 2, 4, 5, 7], n)
    f["side_rule"] = 1
    f["vlan"] = rng.choice([0, 100], n)
    f["client_mac"] = 0x525400000000 + ci
    table = flows_to_arrow(f)
    return _annotate(table, rng.integers(0, len(AGENTS), n))


def make_edges(n: int, rng: np.random.Generator) -> tuple[pa.Table, pa.Table]:
    """(1 s edges, 60 s edges) aggregated from ``n`` random per-second deltas, as the agent does."""
    d = np.zeros(n, EDGE_DELTA_DTYPE)
    ci = rng.integers(0, len(CLIENTS) - 2, n)
    si = rng.integers(0, len(SERVERS) - 1, n)
    d["second_ns"] = T0 + rng.integers(0, SPAN // NS, n) * NS
    d["client_hi"], d["client_lo"] = _addresses(CLIENTS, ci)
    d["server_hi"], d["server_lo"] = _addresses(SERVERS, si)
    d["server_port"] = PORTS[si % len(PORTS)]
    d["proto"] = np.where(d["server_port"] == 53, 17, 6)
    d["packets_c2s"] = rng.integers(1, 100, n)
    d["packets_s2c"] = rng.integers(0, 100, n)
    d["bytes_c2s"] = d["packets_c2s"] * rng.integers(40, 1500, n)
    d["bytes_s2c"] = d["packets_s2c"] * rng.integers(40, 1500, n)
    d["retrans"] = rng.integers(0, 2, n)
    d["flows_opened"] = rng.integers(0, 2, n)
    d["flows_closed"] = rng.integers(0, 2, n)
    d["flows_failed"] = d["flows_closed"] * (rng.random(n) < 0.1)
    d["rtt_count"] = rng.integers(0, 2, n)
    d["rtt_sum_us"] = d["rtt_count"] * rng.uniform(50, 900, n)
    d["vlan"] = rng.choice([0, 100], n)
    # each edge (client, server) is seen by one agent: the 1 s and 60 s sums then group alike
    agent_of = (ci + si) % len(AGENTS)
    d["interface"] = agent_of
    e1 = edges_with_text(aggregate_edges(d, 1.0))
    e60 = edges_with_text(aggregate_edges(d, 60.0))
    return (_annotate(e1, e1["interface"].to_numpy().astype(np.int64)),
            _annotate(e60, e60["interface"].to_numpy().astype(np.int64)))  # fmt: skip


def make_dataset(seed: int = 7, flows: int = 3000, deltas: int = 20000) -> Dataset:
    """The whole test dataset."""
    rng = np.random.default_rng(seed)
    e1, e60 = make_edges(deltas, rng)
    return Dataset(make_flows(flows, rng), e1, e60)


def open_test_store(path: str, dataset: Dataset | None = None, database: str = "cloudtap"):  # type: ignore[no-untyped-def]
    """A migrated embedded store in ``path`` holding ``dataset`` (inserted once, as one batch)."""
    from cloudtap.server.store.base import BatchKey
    from cloudtap.server.store.clickhouse import open_store

    store = open_store(f"chdb://{path}", database)
    if dataset is not None:
        store.insert(dataset.kinds(), BatchKey("query-tests", 1))
    return store


# --- a small inventory over the dataset's addresses (tagged at insert), for name queries ----------------

#: VM name -> (project key, host key, IP). ``db-01`` is renamed ``ledger-01`` at ``T0 + 1 h``.
VMS = {
    "db-01": ("pay", "hv-01", "10.1.0.1"),
    "db-02": ("pay", "hv-02", "10.1.0.2"),
    "web-01": ("shop", "hv-02", "10.1.0.3"),
    "app-01": ("pay", "hv-01", "10.0.0.1"),
    "app-02": ("shop", "hv-02", "10.0.0.2"),
}
PROJECTS = {"pay": "payments", "shop": "shop"}
RENAMED_AT = T0 + 3600 * NS


def names_inventory(taken_at: int = T0 - 3600 * NS, renamed: bool = False):  # type: ignore[no-untyped-def]
    """The snapshot of the static source: projects payments/shop, hosts hv-01/02, five VMs, one subnet."""
    from cloudtap.inventory.model import VM, Host, Interface, Network, Project, Region, Snapshot, Subnet

    vms, nics = [], []
    for i, (name, (project, host, ip)) in enumerate(VMS.items()):
        shown = "ledger-01" if renamed and name == "db-01" else name
        vms.append(VM(f"{project}/{name}", shown, project, host, "ACTIVE"))
        nics.append(Interface(f"m{i}", f"fa:16:3e:00:00:{i:02x}", (ip,), f"{project}/{name}", "net", "sub"))
    return Snapshot(
        source="static",
        taken_at=taken_at,
        regions=[Region("eu", "eu-west")],
        projects=[Project(k, v, "eu") for k, v in PROJECTS.items()],
        hosts=[Host("hv-01", "hv-01", region="eu"), Host("hv-02", "hv-02", region="eu")],
        networks=[Network("net", "net")],
        subnets=[Subnet("sub", "backend", "10.0.0.0/8", "net")],
        vms=vms,
        interfaces=nics,
    )


def open_named_store(path: str, dataset: Dataset, database: str = "cloudtap"):  # type: ignore[no-untyped-def]
    """A store holding the inventory (with the rename) and ``dataset`` tagged by it: ``(store, inventory)``."""
    from cloudtap.inventory.store import InventoryStore
    from cloudtap.inventory.tagging import Tagger
    from cloudtap.server.store.base import BatchKey
    from cloudtap.server.store.clickhouse import open_store

    store = open_store(f"chdb://{path}", database)
    inventory = InventoryStore(store, backdate_first_sync=True)
    if not inventory.records():
        inventory.apply(names_inventory())
        inventory.apply(names_inventory(RENAMED_AT, renamed=True))
    store.insert(Tagger(inventory).tag_tables(dataset.kinds()), BatchKey("query-names", 1))
    return store, inventory

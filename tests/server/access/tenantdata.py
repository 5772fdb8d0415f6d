"""Two tenants' data: projects ``alpha`` (A) and ``beta`` (B), their VMs, and traffic between them.

The inventory is a static CSV file (A: a-web, a-app, a-db; B: b-web, b-db, b-cache; one external
address in no project). Flow records and edges, shaped exactly as an agent ships them, are ingested
through the server's :class:`~cloudtap.server.ingest.Ingestor`, which tags them with the inventory's
project ids. Conversations: inside A, inside B, A -> B (a-app -> b-web), and the external address ->
a-web / b-web; B alone goes on for ten minutes after everything else. Expected values are computed
from the ingested tables by IP address, never from the store.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from cloudtap.meter._state import EDGE_DELTA_DTYPE
from cloudtap.meter.edges import aggregate_edges, edges_with_text
from cloudtap.meter.records import flows_to_arrow
from cloudtap.schema.address import from_text
from cloudtap.schema.flow import FLOW_DTYPE
from cloudtap.server.store.base import BatchKey

NS = 1_000_000_000
MINUTE = 60 * NS
HOUR = 3600 * NS
#: 2025-06-01T00:00:00Z: hour 0 is the baseline, hour 1 the window; B alone also talks in 02:00-02:10.
T0 = 1_748_736_000 * NS
END = T0 + 2 * HOUR + 10 * MINUTE
EXTERNAL = "192.0.2.10"
#: VM name -> (project, host, IP, MAC).
VMS = {
    "a-web": ("alpha", "hv-1", "10.10.0.1", "fa:16:3e:0a:00:01"),
    "a-app": ("alpha", "hv-2", "10.10.0.2", "fa:16:3e:0a:00:02"),
    "a-db": ("alpha", "hv-1", "10.10.0.3", "fa:16:3e:0a:00:03"),
    "b-web": ("beta", "hv-2", "10.20.0.1", "fa:16:3e:0b:00:01"),
    "b-db": ("beta", "hv-3", "10.20.0.2", "fa:16:3e:0b:00:02"),
    "b-cache": ("beta", "hv-3", "10.20.0.3", "fa:16:3e:0b:00:03"),
}
IP = {name: ip for name, (_, _, ip, _) in VMS.items()}
NAME = {ip: name for name, ip in IP.items()}
A_IPS = frozenset(ip for _, (project, _, ip, _) in VMS.items() if project == "alpha")
B_IPS = frozenset(ip for _, (project, _, ip, _) in VMS.items() if project == "beta")
#: (client, server, port, span start, span end, edge deltas, flow records): B is busiest, and bursts in hour 1.
CONVERSATIONS = [
    ("a-web", "a-db", 5432, T0, T0 + 2 * HOUR, 900, 60),
    ("a-app", "a-db", 5432, T0, T0 + 2 * HOUR, 700, 40),
    ("a-web", "a-app", 8080, T0, T0 + 2 * HOUR, 500, 30),
    ("a-app", "b-web", 443, T0 + HOUR, T0 + 2 * HOUR, 400, 25),
    ("b-web", "b-db", 5432, T0, END, 1500, 90),
    ("b-web", "b-cache", 6379, T0 + HOUR, T0 + 2 * HOUR, 1200, 70),
    (EXTERNAL, "a-web", 443, T0, T0 + 2 * HOUR, 300, 20),
    (EXTERNAL, "b-web", 443, T0, END, 600, 35),
]
AGENT = "hv-agent"
KEY = BatchKey("tenant-tests", 1)
INVENTORY_CSV = "name,project,host,ip,mac,network,subnet,cidr\n" + "".join(
    f"{name},{project},{host},{ip},{mac},{project}-net,{project}-sub,{ip.rsplit('.', 1)[0]}.0/24\n"
    for name, (project, host, ip, mac) in VMS.items()
)


def ip_of(end: str) -> str:
    """A conversation end's address (a VM name or an address)."""
    return IP.get(end, end)


def touches(ips: frozenset[str], client: str, server: str) -> bool:
    """True when a row with these addresses has an end in ``ips``."""
    return client in ips or server in ips


@dataclass
class TenantData:
    """What was ingested: agent-shaped tables per stream kind."""

    flows: pa.Table
    edges_1s: pa.Table
    edges_60s: pa.Table

    def kinds(self) -> dict[str, pa.Table]:
        return {"flows": self.flows, "edges_1s": self.edges_1s, "edges_60s": self.edges_60s}

    def edge_rows(self, keep: Callable[[str, str], bool] = lambda c, s: True, t0: int = T0,
                  t1: int = END) -> list[dict[str, Any]]:  # fmt: skip
        """1 s edge rows in ``[t0, t1)`` whose (client, server) ``keep`` accepts."""
        return [r for r in self.edges_1s.to_pylist()
                if t0 <= r["time_ns"] < t1 and keep(r["client_ip"], r["server_ip"])]  # fmt: skip

    def edge_bytes(
        self, keep: Callable[[str, str], bool] = lambda c, s: True, t0: int = T0, t1: int = END
    ) -> int:
        """Bytes (both directions) of those rows."""
        return sum(int(r["bytes_c2s"]) + int(r["bytes_s2c"]) for r in self.edge_rows(keep, t0, t1))

    def flow_rows(self, keep: Callable[[str, str], bool] = lambda c, s: True) -> list[dict[str, Any]]:
        """Flow records whose (client, server) ``keep`` accepts."""
        return [r for r in self.flows.to_pylist() if keep(r["client_ip"], r["server_ip"])]


def _pairs(addresses: list[str]) -> tuple[np.ndarray, np.ndarray]:
    pairs = np.array([from_text(a) for a in addresses], dtype=np.uint64)
    return pairs[:, 0], pairs[:, 1]


def _annotate(table: pa.Table) -> pa.Table:
    n = table.num_rows
    table = table.append_column("interface_name", pa.array(["tap0"] * n, pa.string()))
    table = table.append_column("vm_domain", pa.array([""] * n, pa.string()))
    table = table.append_column("vm_mac", pa.array([""] * n, pa.string()))
    return table.append_column("agent_id", pa.array([AGENT] * n, pa.string()))


def make_tenant_data(seed: int = 11) -> TenantData:
    """The conversations as one agent meters them (one agent: nothing to deduplicate)."""
    rng = np.random.default_rng(seed)
    deltas, flows = [], []
    for client, server, port, t0, t1, n_deltas, n_flows in CONVERSATIONS:
        d = np.zeros(n_deltas, EDGE_DELTA_DTYPE)
        d["second_ns"] = rng.integers(t0 // NS, t1 // NS, n_deltas) * NS
        d["client_hi"], d["client_lo"] = _pairs([ip_of(client)] * n_deltas)
        d["server_hi"], d["server_lo"] = _pairs([ip_of(server)] * n_deltas)
        d["server_port"] = port
        d["proto"] = 6
        d["packets_c2s"] = rng.integers(1, 50, n_deltas)
        d["packets_s2c"] = rng.integers(1, 50, n_deltas)
        d["bytes_c2s"] = d["packets_c2s"] * rng.integers(60, 1500, n_deltas)
        d["bytes_s2c"] = d["packets_s2c"] * rng.integers(60, 1500, n_deltas)
        d["flows_opened"] = rng.integers(0, 2, n_deltas)
        d["flows_closed"] = d["flows_opened"]
        d["rtt_count"] = rng.integers(0, 2, n_deltas)
        d["rtt_sum_us"] = d["rtt_count"] * rng.uniform(50, 900, n_deltas)
        deltas.append(d)
        f = np.zeros(n_flows, FLOW_DTYPE)
        f["client_hi"], f["client_lo"] = _pairs([ip_of(client)] * n_flows)
        f["server_hi"], f["server_lo"] = _pairs([ip_of(server)] * n_flows)
        f["ip_ver"] = 4
        f["first_ns"] = rng.integers(t0, t1 - 40 * NS, n_flows)
        f["start_ns"] = f["first_ns"]
        f["last_ns"] = f["first_ns"] + rng.integers(0, 30 * NS, n_flows)
        f["proto"] = 6
        f["server_port"] = port
        f["client_port"] = rng.integers(1024, 65535, n_flows)
        for side in ("c2s", "s2c"):
            f[f"packets_{side}"] = rng.integers(1, 500, n_flows)
            f[f"bytes_{side}"] = f[f"packets_{side}"] * rng.integers(60, 1500, n_flows)
            f[f"l2_bytes_{side}"] = f[f"bytes_{side}"] + 14 * f[f"packets_{side}"]
        f["rtt_client_us"] = rng.uniform(10, 5000, n_flows)
        f["rtt_server_us"] = rng.uniform(10, 5000, n_flows)
        f["close_type"] = 1
        f["side_rule"] = 1
        flows.append(f)
    every = np.concatenate(deltas)
    f_all = np.concatenate(flows)
    f_all["flow_id"] = np.arange(1, len(f_all) + 1)
    return TenantData(
        flows=_annotate(flows_to_arrow(f_all)),
        edges_1s=_annotate(edges_with_text(aggregate_edges(every, 1.0))),
        edges_60s=_annotate(edges_with_text(aggregate_edges(every, 60.0))),
    )

"""Traffic for the metrics tests: agent batches (encoded as agents ship them) and the inventory they see.

Three VMs talk over the last few minutes; ``batch(seq)`` is one batch of all three stream kinds.
"""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa

from cloudtap.meter._state import EDGE_DELTA_DTYPE
from cloudtap.meter.edges import aggregate_edges, edges_with_text
from cloudtap.meter.records import flows_to_arrow
from cloudtap.schema.address import from_text
from cloudtap.schema.flow import FLOW_DTYPE
from cloudtap.server.store.base import KINDS
from cloudtap.ship.wire import decode_batch, encode_batch

NS = 1_000_000_000
AGENT = "agent-hv-m1"
VMS = {"m-web": "10.30.0.1", "m-app": "10.30.0.2", "m-db": "10.30.0.3"}
INVENTORY_CSV = "name,project,host,ip,mac,network,subnet,cidr\n" + "".join(
    f"{name},metrics,hv-m1,{ip},fa:16:3e:0c:00:0{i},m-net,m-sub,10.30.0.0/24\n"
    for i, (name, ip) in enumerate(VMS.items(), 1)
)
PAIRS = [("m-web", "m-app", 8080), ("m-app", "m-db", 5432)]


def _pairs(addresses: list[str]) -> tuple[np.ndarray, np.ndarray]:
    pairs = np.array([from_text(a) for a in addresses], dtype=np.uint64)
    return pairs[:, 0], pairs[:, 1]


def _annotate(table: pa.Table) -> pa.Table:
    n = table.num_rows
    for name in ("interface_name", "vm_domain", "vm_mac"):
        table = table.append_column(name, pa.array(["tap0" if name == "interface_name" else ""] * n, pa.string()))
    return table.append_column("agent_id", pa.array([AGENT] * n, pa.string()))


def tables(seq: int, n: int = 40) -> dict[str, pa.Table]:
    """Flow records and 1 s / 60 s edges of ``n`` deltas per pair, within the last five minutes."""
    rng = np.random.default_rng(seq)
    now_s = int(time.time())
    deltas, flows = [], []
    for client, server, port in PAIRS:
        d = np.zeros(n, EDGE_DELTA_DTYPE)
        d["second_ns"] = rng.integers(now_s - 300, now_s - 10, n) * NS
        d["client_hi"], d["client_lo"] = _pairs([VMS[client]] * n)
        d["server_hi"], d["server_lo"] = _pairs([VMS[server]] * n)
        d["server_port"], d["proto"] = port, 6
        d["packets_c2s"], d["packets_s2c"] = rng.integers(1, 50, n), rng.integers(1, 50, n)
        d["bytes_c2s"], d["bytes_s2c"] = d["packets_c2s"] * 800, d["packets_s2c"] * 900
        d["flows_opened"] = d["flows_closed"] = 1
        deltas.append(d)
        f = np.zeros(n // 4, FLOW_DTYPE)
        f["client_hi"], f["client_lo"] = _pairs([VMS[client]] * len(f))
        f["server_hi"], f["server_lo"] = _pairs([VMS[server]] * len(f))
        f["ip_ver"], f["proto"], f["server_port"] = 4, 6, port
        f["first_ns"] = f["start_ns"] = rng.integers(now_s - 300, now_s - 60, len(f)) * NS
        f["last_ns"] = f["first_ns"] + 5 * NS
        f["client_port"] = rng.integers(1024, 65535, len(f))
        for side in ("c2s", "s2c"):
            f[f"packets_{side}"] = rng.integers(1, 500, len(f))
            f[f"bytes_{side}"] = f[f"l2_bytes_{side}"] = f[f"packets_{side}"] * 700
        f["close_type"] = f["side_rule"] = 1
        flows.append(f)
    every = np.concatenate(deltas)
    f_all = np.concatenate(flows)
    f_all["flow_id"] = np.arange(1, len(f_all) + 1) + seq * 1_000_000
    return {
        "flows": _annotate(flows_to_arrow(f_all)),
        "edges_1s": _annotate(edges_with_text(aggregate_edges(every, 1.0))),
        "edges_60s": _annotate(edges_with_text(aggregate_edges(every, 60.0))),
    }


def batch(seq: int) -> bytes:
    """One encoded batch of ``AGENT``."""
    return encode_batch(AGENT, seq, tables(seq))


def sizes(frames: list[bytes]) -> tuple[dict[str, int], dict[str, int]]:
    """Rows and decoded (Arrow) bytes per kind of ``frames``, as the server decodes them."""
    rows: dict[str, int] = {}
    nbytes: dict[str, int] = {}
    for frame in frames:
        for kind, table in decode_batch(frame, KINDS).tables.items():
            rows[kind] = rows.get(kind, 0) + table.num_rows
            # what the server counts: the sizes of the decoded batch's buffers
            nbytes[kind] = nbytes.get(kind, 0) + table.get_total_buffer_size()
    return rows, nbytes

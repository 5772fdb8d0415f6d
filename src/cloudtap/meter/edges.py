"""Edge metrics: client IP -> server IP:port/protocol per interval, aggregated from edge deltas.

The meter kernel emits one *delta* per flow per 1-second bucket it was active in; this module sums
deltas into edges at any coarser interval (1 s, 1 min, 1 h). Mean metrics are kept as sum + count
(``rtt_sum_us``, ``rtt_count``) so they re-aggregate exactly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from cloudtap.meter._state import EDGE_DELTA_DTYPE
from cloudtap.schema.address import column_to_text

if TYPE_CHECKING:
    import pyarrow as pa

EDGE_KEYS = (
    "time_ns",
    "client_hi",
    "client_lo",
    "server_hi",
    "server_lo",
    "server_port",
    "proto",
    "vlan",
    "tunnel_id",
    "interface",
)
EDGE_SUMS = (
    "packets_c2s", "packets_s2c", "bytes_c2s", "bytes_s2c", "retrans",
    "flows_opened", "flows_closed", "flows_failed", "rtt_sum_us", "rtt_count",
)  # fmt: skip


def aggregate_edges(deltas: np.ndarray, interval_s: float) -> pa.Table:
    """Sum edge deltas into edges per ``interval_s`` bucket.

    Args:
        deltas: ``EDGE_DELTA_DTYPE`` rows (any order).
        interval_s: bucket width, a multiple of the meter's edge interval (1, 60, 3600...).

    Returns:
        Arrow table with ``EDGE_KEYS`` + ``EDGE_SUMS`` columns (addresses still as hi/lo), sorted by time.
    """
    import pyarrow as pa  # on first use: `cloudtap meter --format jsonl` never loads it

    if deltas.dtype != EDGE_DELTA_DTYPE:
        raise TypeError(f"expected EDGE_DELTA_DTYPE, got {deltas.dtype}")
    width = int(round(interval_s * 1e9))
    cols: dict[str, np.ndarray] = {"time_ns": (deltas["second_ns"] // width) * width}
    for key in EDGE_KEYS[1:]:
        cols[key] = np.ascontiguousarray(deltas[key])
    for name in EDGE_SUMS:
        values = deltas[name]
        cols[name] = values.astype(np.float64 if values.dtype.kind == "f" else np.uint64)
    table = pa.table(cols)
    grouped = table.group_by(list(EDGE_KEYS), use_threads=False).aggregate([(n, "sum") for n in EDGE_SUMS])
    grouped = grouped.rename_columns([c.removesuffix("_sum") for c in grouped.column_names])
    return grouped.sort_by([("time_ns", "ascending")]).select(list(EDGE_KEYS) + list(EDGE_SUMS))


def edges_with_text(edges: pa.Table) -> pa.Table:
    """Replace the hi/lo address columns of an edge table by ``client_ip`` / ``server_ip`` text."""
    import pyarrow as pa  # on first use: `cloudtap meter --format jsonl` never loads it

    client = column_to_text(edges["client_hi"].to_numpy(), edges["client_lo"].to_numpy())
    server = column_to_text(edges["server_hi"].to_numpy(), edges["server_lo"].to_numpy())
    rest = [c for c in edges.column_names if c not in ("client_hi", "client_lo", "server_hi", "server_lo")]
    out = edges.select(rest)
    out = out.add_column(1, "client_ip", pa.array(client, pa.string()))
    return out.add_column(2, "server_ip", pa.array(server, pa.string()))

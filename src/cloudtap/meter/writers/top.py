"""The biggest flows of a record array: records summed per ``flow_id``, in numpy (no Arrow compute)."""

from __future__ import annotations

from typing import Any

import numpy as np

from cloudtap.meter.writers.text import ENUM_COLUMNS, address_column, enum_column
from cloudtap.schema.flow import FLOW_DTYPE

#: Counters summed over a flow's records (keys end in ``_sum``, as Arrow's group_by names them).
SUMMED = ("bytes_c2s", "bytes_s2c", "packets_c2s", "packets_s2c", "retrans_c2s", "retrans_s2c")
#: Columns taken from a flow's last record (highest ``record_seq``).
LAST = ("proto", "client_port", "server_port", "rtt_client_us", "rtt_server_us")


def _texts(col_data: np.ndarray, offsets: np.ndarray) -> list[str]:
    raw = col_data.tobytes()
    return [raw[offsets[i] : offsets[i + 1]].decode("ascii") for i in range(len(offsets) - 1)]


def top_flows(flows: np.ndarray, limit: int = 20) -> list[dict[str, Any]]:
    """The ``limit`` flows with the most bytes (both directions), biggest first; ties by ``flow_id``.

    Each row has the summed counters (``bytes_c2s_sum``...), ``total``, and ``flow_id``, ``proto``,
    ``client_ip``, ``client_port``, ``server_ip``, ``server_port``, ``rtt_client_us``,
    ``rtt_server_us``, ``close_type`` of the flow's last record.
    """
    if flows.dtype != FLOW_DTYPE:
        raise TypeError(f"expected FLOW_DTYPE, got {flows.dtype}")
    if len(flows) == 0 or limit <= 0:
        return []
    fid = flows["flow_id"]
    order = np.lexsort((flows["record_seq"], fid))
    sorted_fid = fid[order]
    starts = np.flatnonzero(np.r_[True, sorted_fid[1:] != sorted_fid[:-1]])
    last = order[np.r_[starts[1:], len(order)] - 1]
    sums = {f"{c}_sum": np.add.reduceat(flows[c][order].astype(np.uint64), starts) for c in SUMMED}
    total = sums["bytes_c2s_sum"] + sums["bytes_s2c_sum"]
    rank = np.lexsort((sorted_fid[starts], np.iinfo(np.uint64).max - total))[:limit]
    rows_last = flows[last[rank]]
    client = address_column(rows_last["client_hi"], rows_last["client_lo"])
    server = address_column(rows_last["server_hi"], rows_last["server_lo"])
    close = enum_column(rows_last["close_type"], ENUM_COLUMNS["close_type"])
    columns: dict[str, list[Any]] = {
        "flow_id": rows_last["flow_id"].tolist(),
        **{k: v[rank].tolist() for k, v in sums.items()},
        "total": total[rank].tolist(),
        **{c: rows_last[c].tolist() for c in LAST},
        "client_ip": _texts(client.data, client.offsets),
        "server_ip": _texts(server.data, server.offsets),
        "close_type": _texts(close.data, close.offsets),
    }
    return [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]

"""Flow records as tables: numpy ``FLOW_DTYPE`` to Arrow, with addresses and enums as text."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from cloudtap.schema.address import column_to_text
from cloudtap.schema.flow import CLOSE_NAMES, FLOW_DTYPE, SIDE_NAMES
from cloudtap.schema.packet import TUNNEL_NAMES

if TYPE_CHECKING:
    import pyarrow as pa

#: (hi, lo) column pairs rendered as one text column.
ADDRESS_COLUMNS = (
    ("client_ip", "client_hi", "client_lo"),
    ("server_ip", "server_hi", "server_lo"),
    ("tunnel_src", "tunnel_src_hi", "tunnel_src_lo"),
    ("tunnel_dst", "tunnel_dst_hi", "tunnel_dst_lo"),
)
_ENUMS = {"close_type": CLOSE_NAMES, "side_rule": SIDE_NAMES, "tunnel_type": TUNNEL_NAMES}

#: Column order of the text outputs (jsonl/csv/table): the documented names first.
OUTPUT_COLUMNS = (
    "flow_id", "proto", "client_ip", "client_port", "server_ip", "server_port",
    "packets_c2s", "packets_s2c", "bytes_c2s", "bytes_s2c", "l2_bytes_c2s", "l2_bytes_s2c",
    "payload_bytes_c2s", "payload_bytes_s2c", "start_ns", "first_ns", "last_ns",
    "tcp_flags_c2s", "tcp_flags_s2c", "rtt_client_us", "rtt_server_us", "retrans_c2s", "retrans_s2c",
    "zero_window_c2s", "zero_window_s2c", "ooo_c2s", "ooo_s2c", "syn_count", "synack_count",
    "close_type", "side_rule", "record_seq", "vlan", "tunnel_type", "tunnel_id", "tunnel_src", "tunnel_dst",
    "client_mac", "server_mac", "ip_ver", "interface",
    "requests", "request_errors", "requests_answered", "request_latency_sum_us",
)  # fmt: skip


def _enum_column(values: np.ndarray, names: tuple[str, ...]) -> pa.Array:
    import pyarrow as pa  # on first use: `cloudtap meter --format jsonl` never loads it

    table = np.array(list(names) + ["unknown"], dtype=object)
    idx = np.minimum(values.astype(np.int64), len(names))
    return pa.array(table[idx], type=pa.string())


def flows_to_arrow(flows: np.ndarray) -> pa.Table:
    """Convert ``FLOW_DTYPE`` records to an Arrow table with text addresses and enum names."""
    import pyarrow as pa  # on first use: `cloudtap meter --format jsonl` never loads it

    if flows.dtype != FLOW_DTYPE:
        raise TypeError(f"expected FLOW_DTYPE, got {flows.dtype}")
    columns: dict[str, pa.Array] = {}
    for name, hi, lo in ADDRESS_COLUMNS:
        columns[name] = pa.array(column_to_text(flows[hi], flows[lo]), type=pa.string())
    for name, names in _ENUMS.items():
        columns[name] = _enum_column(flows[name], names)
    for name in OUTPUT_COLUMNS:
        if name not in columns:
            columns[name] = pa.array(np.ascontiguousarray(flows[name]))
    return pa.table({name: columns[name] for name in OUTPUT_COLUMNS})


def empty_table() -> pa.Table:
    """The output schema with no rows."""
    return flows_to_arrow(np.zeros(0, FLOW_DTYPE))

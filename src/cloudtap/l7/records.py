"""Request records as an Arrow table, built from numpy buffers (no Python object per record).

Addresses become text, enums their names, and the fixed-width byte fields strings: NUL padding is
dropped and bytes outside printable ASCII become ``?`` (so every output is valid UTF-8 and JSON).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from cloudtap.meter.writers.arrow import numeric_column, string_column
from cloudtap.meter.writers.text import TextColumn, address_column, enum_column
from cloudtap.schema.request import L7_DTYPE, L7_PROTO_NAMES, REQ_STATUS_NAMES

#: Column order of every output.
OUTPUT_COLUMNS = (
    "l7_proto", "client_ip", "client_port", "server_ip", "server_port", "req_ns", "resp_ns", "latency_us",
    "request_type", "resource", "host", "status", "code", "error", "request_id", "arg_count", "proto",
    "interface", "flags",
)  # fmt: skip
TEXT_FIELDS = ("request_type", "resource", "host", "error")


def fixed_text_column(values: np.ndarray) -> TextColumn:
    """A NUL-padded ``S<n>`` column as bytes + offsets, non-printable bytes replaced by ``?``."""
    n = values.shape[0]
    width = values.dtype.itemsize
    mat = np.ascontiguousarray(values).view(np.uint8).reshape(n, width)
    nul = mat == 0
    lengths = np.where(nul.any(axis=1), nul.argmax(axis=1), width).astype(np.int64)
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    data = mat[np.arange(width) < lengths[:, None]]
    data = np.where((data < 32) | (data > 126), np.uint8(63), data).astype(np.uint8)
    return TextColumn(np.ascontiguousarray(data), offsets)


def requests_to_arrow(records: np.ndarray) -> pa.Table:
    """``L7_DTYPE`` records to an Arrow table in ``OUTPUT_COLUMNS`` order."""
    if records.dtype != L7_DTYPE:
        raise TypeError(f"expected L7_DTYPE, got {records.dtype}")
    columns: dict[str, pa.Array | pa.ChunkedArray] = {
        "client_ip": string_column(address_column(records["client_hi"], records["client_lo"])),
        "server_ip": string_column(address_column(records["server_hi"], records["server_lo"])),
        "l7_proto": string_column(enum_column(records["l7_proto"], L7_PROTO_NAMES)),
        "status": string_column(enum_column(records["status"], REQ_STATUS_NAMES)),
    }
    for name in TEXT_FIELDS:
        columns[name] = string_column(fixed_text_column(records[name]))
    for name in OUTPUT_COLUMNS:
        if name not in columns:
            columns[name] = numeric_column(records[name])
    return pa.table({name: columns[name] for name in OUTPUT_COLUMNS})

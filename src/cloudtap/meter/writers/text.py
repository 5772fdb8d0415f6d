"""Text columns of flow records, Arrow-style (bytes + offsets), built without a Python loop per row."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cloudtap.meter.writers._kernels import format_addresses
from cloudtap.schema.flow import CLOSE_NAMES, SIDE_NAMES
from cloudtap.schema.packet import TUNNEL_NAMES

#: (hi, lo) column pairs rendered as one text column (as :mod:`cloudtap.meter.records` names them).
ADDRESS_COLUMNS = (
    ("client_ip", "client_hi", "client_lo"),
    ("server_ip", "server_hi", "server_lo"),
    ("tunnel_src", "tunnel_src_hi", "tunnel_src_lo"),
    ("tunnel_dst", "tunnel_dst_hi", "tunnel_dst_lo"),
)
#: Enum columns rendered by name; values past the table read ``unknown``.
ENUM_COLUMNS: dict[str, tuple[str, ...]] = {
    "close_type": CLOSE_NAMES,
    "side_rule": SIDE_NAMES,
    "tunnel_type": TUNNEL_NAMES,
}


@dataclass(frozen=True)
class TextColumn:
    """One string per row: ``data[offsets[i]:offsets[i + 1]]`` (ASCII)."""

    data: np.ndarray  #: uint8
    offsets: np.ndarray  #: int64, length rows + 1


def address_column(hi: np.ndarray, lo: np.ndarray) -> TextColumn:
    """Addresses as text: dotted quad for IPv4-mapped, RFC 5952 for IPv6 (as ``ipaddress`` writes)."""
    hi = np.ascontiguousarray(hi, dtype=np.uint64)
    lo = np.ascontiguousarray(lo, dtype=np.uint64)
    if hi.shape != lo.shape or hi.ndim != 1:
        raise ValueError("hi and lo must be 1-D arrays of one length")
    data = np.empty(len(hi) * 39, dtype=np.uint8)
    offsets = np.empty(len(hi) + 1, dtype=np.int64)
    used = format_addresses(hi, lo, data, offsets)
    return TextColumn(data[:used], offsets)


def enum_column(values: np.ndarray, names: tuple[str, ...]) -> TextColumn:
    """``names[v]`` per row (``unknown`` past the end), gathered from a padded name matrix."""
    encoded = [n.encode("ascii") for n in (*names, "unknown")]
    width = max(1, max(len(e) for e in encoded))
    matrix = np.zeros((len(encoded), width), dtype=np.uint8)
    lengths = np.array([len(e) for e in encoded], dtype=np.int64)
    for k, e in enumerate(encoded):  # one per name, not per row
        matrix[k, : len(e)] = np.frombuffer(e, dtype=np.uint8)
    idx = np.minimum(values.astype(np.int64), len(names))
    row_len = lengths[idx]
    offsets = np.zeros(len(idx) + 1, dtype=np.int64)
    np.cumsum(row_len, out=offsets[1:])
    data = matrix[idx][np.arange(width) < row_len[:, None]]
    return TextColumn(np.ascontiguousarray(data), offsets)


def text_columns(flows: np.ndarray) -> dict[str, TextColumn]:
    """Every text column of the output (addresses and enum names), keyed by output name."""
    columns = {name: address_column(flows[hi], flows[lo]) for name, hi, lo in ADDRESS_COLUMNS}
    for name, names in ENUM_COLUMNS.items():
        columns[name] = enum_column(flows[name], names)
    return columns

"""Flow records as JSON lines, formatted in bulk by a numba kernel, chunk by chunk.

The text equals ``json.dumps(row, separators=(",", ":"))`` per row of the output table: keys in
``OUTPUT_COLUMNS`` order, integers in decimal, floats as Python's ``repr`` (NaN/Infinity as the
``json`` module writes them), addresses and enum names as JSON strings.
"""

from __future__ import annotations

import json
from typing import BinaryIO

import numpy as np

from cloudtap.meter.records import OUTPUT_COLUMNS
from cloudtap.meter.writers._kernels import (
    FLOAT_MAX_CHARS,
    INT_MAX_CHARS,
    KIND_FLOAT,
    KIND_INT,
    KIND_STR,
    KIND_UINT,
    float_fallback,
    jsonl_rows,
)
from cloudtap.meter.writers.text import TextColumn, text_columns
from cloudtap.schema.flow import FLOW_DTYPE

#: Rows formatted per kernel call: bounds the buffer (~1.5 KB a row, ~12 MB) and lets writes stream.
CHUNK_ROWS = 8192


def _layout() -> tuple[np.ndarray, np.ndarray, list[str], list[str], list[str], list[str]]:
    """Kinds and slots per output column, plus the column names of each kind in slot order."""
    groups: dict[int, list[str]] = {KIND_UINT: [], KIND_INT: [], KIND_FLOAT: [], KIND_STR: []}
    kinds, slots = [], []
    text = {"client_ip", "server_ip", "tunnel_src", "tunnel_dst", "close_type", "side_rule", "tunnel_type"}
    for name in OUTPUT_COLUMNS:
        if name in text:
            kind = KIND_STR
        else:
            dt = FLOW_DTYPE.fields[name][0]  # type: ignore[index]
            kind = KIND_FLOAT if dt.kind == "f" else KIND_INT if dt.kind == "i" else KIND_UINT
        kinds.append(kind)
        slots.append(len(groups[kind]))
        groups[kind].append(name)
    return (
        np.array(kinds, dtype=np.int64),
        np.array(slots, dtype=np.int64),
        groups[KIND_UINT],
        groups[KIND_INT],
        groups[KIND_FLOAT],
        groups[KIND_STR],
    )


def _keys() -> tuple[np.ndarray, np.ndarray]:
    parts = [("{" if i == 0 else ",") + json.dumps(n) + ":" for i, n in enumerate(OUTPUT_COLUMNS)]
    encoded = [p.encode("ascii") for p in parts]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(e) for e in encoded], out=offsets[1:])
    return np.frombuffer(b"".join(encoded), dtype=np.uint8).copy(), offsets


def _matrix(flows: np.ndarray, names: list[str], dtype: type) -> np.ndarray:
    out: np.ndarray = np.empty((len(flows), max(1, len(names))), dtype=dtype)
    for j, name in enumerate(names):  # one per column
        out[:, j] = flows[name]
    return out


def _float_overrides(floats: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Values the kernel cannot prove, rendered by ``json`` (rare: tiny, huge, NaN, inf)."""
    bad = float_fallback(floats)
    overrides = np.full(floats.shape, -1, dtype=np.int64)
    rows, cols = np.nonzero(bad)
    texts = [json.dumps(float(v)).encode("ascii") for v in floats[rows, cols]]
    overrides[rows, cols] = np.arange(len(texts))
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum([len(t) for t in texts], out=offsets[1:])
    data = np.frombuffer(b"".join(texts), dtype=np.uint8).copy() if texts else np.zeros(1, np.uint8)
    return overrides, data, offsets


def _strings(columns: list[TextColumn], n: int) -> tuple[np.ndarray, np.ndarray]:
    """All text columns in one buffer; offsets shaped (columns, n + 1) into it."""
    offsets = np.zeros((max(1, len(columns)), n + 1), dtype=np.int64)
    base = 0
    for j, col in enumerate(columns):
        offsets[j] = col.offsets + base
        base += len(col.data)
    data = np.concatenate([c.data for c in columns]) if columns else np.zeros(0, np.uint8)
    return (data if len(data) else np.zeros(1, np.uint8)), offsets


def write_jsonl(flows: np.ndarray, out: BinaryIO) -> int:
    """Write ``FLOW_DTYPE`` records to ``out`` as JSON lines; returns the bytes written."""
    if flows.dtype != FLOW_DTYPE:
        raise TypeError(f"expected FLOW_DTYPE, got {flows.dtype}")
    n = len(flows)
    if n == 0:
        return 0
    kinds, slots, unames, inames, fnames, snames = _layout()
    keys, key_offsets = _keys()
    uints = _matrix(flows, unames, np.uint64)
    ints = _matrix(flows, inames, np.int64)
    floats = _matrix(flows, fnames, np.float64)
    overrides, ov_data, ov_offsets = _float_overrides(floats)
    texts = text_columns(flows)
    str_data, str_offsets = _strings([texts[s] for s in snames], n)
    fixed = len(keys) + 2 + INT_MAX_CHARS * (len(unames) + len(inames)) + 2 * len(snames)
    fixed += FLOAT_MAX_CHARS * len(fnames)
    written = 0
    buf = np.empty(0, dtype=np.uint8)
    for start in range(0, n, CHUNK_ROWS):
        stop = min(n, start + CHUNK_ROWS)
        size = (
            (stop - start) * fixed + int((str_offsets[:, stop] - str_offsets[:, start]).sum()) + len(ov_data)
        )
        if len(buf) < size:
            buf = np.empty(size, dtype=np.uint8)
        used = jsonl_rows(start, stop, kinds, slots, keys, key_offsets, uints, ints, floats,
                          overrides, ov_data, ov_offsets, str_data, str_offsets, buf)  # fmt: skip
        out.write(buf[:used].data)
        written += used
    return written

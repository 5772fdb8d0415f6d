"""Records as text rows (JSON lines, CSV) in bulk: the layout for :func:`_rows.text_rows` and the loop.

:class:`RowStyle` says what surrounds values (JSON keys or CSV commas) and how floats read;
:func:`write_rows` formats ``CHUNK_ROWS`` rows per kernel call into one reused buffer and writes each
chunk with one ``write``. Columns are handled by their dtype, so fields appended to ``FLOW_DTYPE``
need nothing here; text columns (addresses, enum names) come from :mod:`writers.text`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from cloudtap.meter.writers._rows import (
    FLOAT_ARROW,
    FLOAT_MAX_CHARS,
    FLOAT_REPR,
    INT_MAX_CHARS,
    KIND_FLOAT,
    KIND_INT,
    KIND_STR,
    KIND_UINT,
    floats_needing_python,
    text_rows,
)
from cloudtap.meter.writers.text import TextColumn

#: Rows formatted per kernel call: bounds the buffer (~1.5 KB a row, ~12 MB) and lets writes stream.
CHUNK_ROWS = 8192


@dataclass(frozen=True)
class RowStyle:
    """How a row reads: ``prefixes[c]`` before column ``c``, ``row_end`` after the last one."""

    prefixes: tuple[bytes, ...]
    row_end: bytes
    float_style: int
    #: Text of the floats the kernel cannot prove (rare: tiny, huge, NaN, inf), by their library.
    float_text: Callable[[np.ndarray], list[bytes]]


def _json_floats(values: np.ndarray) -> list[bytes]:
    return [json.dumps(float(v)).encode("ascii") for v in values]


def _arrow_floats(values: np.ndarray) -> list[bytes]:
    import pyarrow as pa
    import pyarrow.compute as pc

    texts = pc.cast(pa.array(values, pa.float64()), pa.string()).to_pylist()  # the CSV writer's text
    return [t.encode("ascii") for t in texts]


def json_style(names: Sequence[str]) -> RowStyle:
    """``{"name":value,...}`` lines, as ``json.dumps(row, separators=(",", ":"))`` writes them."""
    prefixes = tuple(
        (("{" if i == 0 else ",") + json.dumps(n) + ":").encode("ascii") for i, n in enumerate(names)
    )
    return RowStyle(prefixes, b"}\n", FLOAT_REPR, _json_floats)


def csv_style(names: Sequence[str]) -> RowStyle:
    """Comma-separated values, as Arrow's CSV writer writes them (no header)."""
    return RowStyle(
        tuple(b"" if i == 0 else b"," for i in range(len(names))), b"\n", FLOAT_ARROW, _arrow_floats
    )


def _concat(parts: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(parts) + 1, dtype=np.int64)
    np.cumsum([len(p) for p in parts], out=offsets[1:])
    data = np.frombuffer(b"".join(parts), dtype=np.uint8).copy() if offsets[-1] else np.zeros(1, np.uint8)
    return data, offsets


def _aligned(records: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """``records`` if every numeric field is native-endian at a multiple of its size in aligned rows of
    a multiple of 8 bytes, else a copy of those fields laid out so (the kernel reads fields through
    little-endian views of 1, 2, 4 and 8 bytes)."""
    fields: Mapping[str, tuple[Any, ...]] = records.dtype.fields or {}
    layout = [(n, fields[n][0], int(fields[n][1])) for n in names if n in fields]
    if (
        records.dtype.itemsize % 8 == 0
        and all(offset % ftype.itemsize == 0 and ftype.isnative for _, ftype, offset in layout)
        and records.flags.c_contiguous
        and records.ctypes.data % 8 == 0
    ):
        return records
    native = [(n, ftype.newbyteorder("=")) for n, ftype, _ in layout]
    packed = np.dtype(native, align=True)
    spec = {
        "names": [n for n, _ in native],
        "formats": [ftype for _, ftype in native],
        "offsets": [int(packed.fields[n][1]) for n, _, _ in layout],  # type: ignore[index]
        "itemsize": -(-packed.itemsize // 8) * 8,
    }
    out: np.ndarray[Any, Any] = np.zeros(len(records), np.dtype(spec))  # type: ignore[call-overload]
    for n, _, _ in layout:
        out[n] = records[n]
    return out


def write_rows(
    records: np.ndarray,
    names: Sequence[str],
    texts: dict[str, TextColumn],
    style: RowStyle,
    out: BinaryIO,
) -> int:
    """Write ``records`` (a structured array) as text rows of columns ``names``; returns bytes written.

    A name in ``texts`` is a quoted string column, written as is: its text must need no escaping
    in JSON or CSV (addresses, enum names); every other name is a field of ``records``: unsigned
    and signed integers in decimal, floats as ``style`` says.
    """
    n = len(records)
    if n == 0:
        return 0
    if len(style.prefixes) != len(names):
        raise ValueError("one prefix per column expected")
    records = _aligned(records, [c for c in names if c not in texts])
    dt = records.dtype
    fields: Mapping[str, tuple[Any, ...]] = dt.fields or {}
    kinds, sizes, strides, bases = (np.zeros(len(names), np.int64) for _ in range(4))
    float_names: list[str] = []
    str_names: list[str] = []
    for c, name in enumerate(names):
        if name in texts:
            kinds[c], bases[c] = KIND_STR, len(str_names)
            str_names.append(name)
            continue
        if name not in fields:
            raise ValueError(f"no field or text column {name!r}")
        ftype, offset = fields[name][0], int(fields[name][1])
        if ftype.kind == "f":
            if ftype.itemsize != 8 and style.float_style == FLOAT_ARROW:  # Arrow prints float32 digits
                raise TypeError(f"column {name!r} of dtype {ftype}: CSV text only for float64")
            kinds[c], bases[c] = KIND_FLOAT, len(float_names)
            float_names.append(name)
        elif ftype.kind in "iu" and ftype.itemsize in (1, 2, 4, 8):
            kinds[c] = KIND_INT if ftype.kind == "i" else KIND_UINT
            sizes[c], strides[c], bases[c] = (
                ftype.itemsize,
                dt.itemsize // ftype.itemsize,
                offset // ftype.itemsize,
            )
        else:
            raise TypeError(f"column {name!r} of dtype {ftype} has no text form here")
    raw = records.view(np.uint8).reshape(-1)
    views = (raw.view(np.uint64), raw.view(np.uint32), raw.view(np.uint16), raw)
    floats = np.empty((n, max(1, len(float_names))), dtype=np.float64)
    for j, name in enumerate(float_names):
        floats[:, j] = records[name]
    bad = np.zeros(floats.shape, np.bool_)
    if float_names:
        floats_needing_python(floats, style.float_style, np.empty(64, np.uint8), bad)
    overrides = np.full(floats.shape, -1, dtype=np.int64)
    rows, cols = np.nonzero(bad)
    overrides[rows, cols] = np.arange(len(rows))
    ov_data, ov_offsets = _concat(style.float_text(floats[rows, cols]) if len(rows) else [])
    str_offsets = np.zeros((max(1, len(str_names)), n + 1), dtype=np.int64)
    base = 0
    for j, name in enumerate(str_names):
        str_offsets[j] = texts[name].offsets + base
        base += len(texts[name].data)
    str_data = np.concatenate([texts[s].data for s in str_names]) if base else np.zeros(1, np.uint8)
    prefix, prefix_offsets = _concat(style.prefixes)
    row_end = np.frombuffer(style.row_end, dtype=np.uint8).copy()
    fixed = int(prefix_offsets[-1]) + len(row_end) + 2 * len(str_names)
    fixed += INT_MAX_CHARS * int((kinds <= KIND_INT).sum()) + FLOAT_MAX_CHARS * len(float_names)
    written = 0
    buf = np.empty(0, dtype=np.uint8)
    for start in range(0, n, CHUNK_ROWS):
        stop = min(n, start + CHUNK_ROWS)
        size = (
            (stop - start) * fixed + int((str_offsets[:, stop] - str_offsets[:, start]).sum()) + len(ov_data)
        )
        if len(buf) < size:
            buf = np.empty(size, dtype=np.uint8)
        used = text_rows(start, stop, *views, kinds, sizes, strides, bases, prefix, prefix_offsets, row_end,
                         floats, style.float_style, overrides, ov_data, ov_offsets, str_data, str_offsets,
                         buf)  # fmt: skip
        out.write(buf[:used].data)
        written += used
    return written

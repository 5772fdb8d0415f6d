"""Flow records to Arrow in bulk: the same table as ``records.flows_to_arrow``, without Python objects.

Text columns are built by the numba formatters and every column is handed to Arrow as buffers, so
neither a Python string per row nor pandas is involved (``pa.array`` imports pandas, ~0.2 s, to ask
whether its argument is a pandas object).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from cloudtap.meter.records import OUTPUT_COLUMNS
from cloudtap.meter.writers.text import TextColumn, text_columns
from cloudtap.schema.flow import FLOW_DTYPE

#: Rows per Arrow chunk of a text column: keeps int32 string offsets far below 2**31.
_CHUNK_ROWS = 1 << 24


def _string_array(col: TextColumn, start: int, stop: int) -> pa.Array:
    base = int(col.offsets[start])
    offsets = (col.offsets[start : stop + 1] - base).astype(np.int32)
    data = col.data[base : int(col.offsets[stop])]
    return pa.StringArray.from_buffers(stop - start, pa.py_buffer(offsets), pa.py_buffer(data))


def numeric_column(values: np.ndarray) -> pa.Array:
    """A numpy numeric column as an Arrow array without nulls (zero-copy when contiguous)."""
    values = np.ascontiguousarray(values)
    return pa.Array.from_buffers(pa.from_numpy_dtype(values.dtype), len(values), [None, pa.py_buffer(values)])


def string_column(col: TextColumn) -> pa.Array | pa.ChunkedArray:
    """An Arrow ``string`` column (chunked only past ``_CHUNK_ROWS`` rows)."""
    n = len(col.offsets) - 1
    if n <= _CHUNK_ROWS:
        return _string_array(col, 0, n)
    return pa.chunked_array(
        [_string_array(col, s, min(n, s + _CHUNK_ROWS)) for s in range(0, n, _CHUNK_ROWS)], pa.string()
    )


def flows_table(flows: np.ndarray) -> pa.Table:
    """``FLOW_DTYPE`` records as the output Arrow table (text addresses, enum names, ``OUTPUT_COLUMNS``)."""
    if flows.dtype != FLOW_DTYPE:
        raise TypeError(f"expected FLOW_DTYPE, got {flows.dtype}")
    texts = text_columns(flows)
    columns: dict[str, pa.Array | pa.ChunkedArray] = {}
    for name in OUTPUT_COLUMNS:
        if name in texts:
            columns[name] = string_column(texts[name])
        else:
            columns[name] = numeric_column(flows[name])
    return pa.table(columns)

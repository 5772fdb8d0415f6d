"""Flow records as JSON lines, formatted in bulk by a numba kernel, chunk by chunk.

The text equals ``json.dumps(row, separators=(",", ":"))`` per row of the output table: keys in
``OUTPUT_COLUMNS`` order, integers in decimal, floats as Python's ``repr`` (NaN/Infinity as the
``json`` module writes them), addresses and enum names as JSON strings.
"""

from __future__ import annotations

from typing import BinaryIO

import numpy as np

from cloudtap.meter.records import OUTPUT_COLUMNS
from cloudtap.meter.writers.rows import json_style, write_rows
from cloudtap.meter.writers.text import text_columns
from cloudtap.schema.flow import FLOW_DTYPE


def write_jsonl(flows: np.ndarray, out: BinaryIO) -> int:
    """Write ``FLOW_DTYPE`` records to ``out`` as JSON lines; returns the bytes written."""
    if flows.dtype != FLOW_DTYPE:
        raise TypeError(f"expected FLOW_DTYPE, got {flows.dtype}")
    if len(flows) == 0:
        return 0
    return write_rows(flows, OUTPUT_COLUMNS, text_columns(flows), json_style(OUTPUT_COLUMNS), out)

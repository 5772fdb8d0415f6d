"""Flow records as CSV, formatted in bulk by the row kernel: the bytes Arrow's CSV writer writes.

A quoted header, strings (addresses, enum names) quoted, integers in decimal, floats as Arrow
formats them (``1`` not ``1.0``; exponent notation outside decimal exponents -6..9), ``\\n`` line
ends: what ``pyarrow.csv.write_csv`` writes for the output table, without building the table or
importing pyarrow (unless a float needs Arrow's own formatter: tiny, huge, NaN, inf).
"""

from __future__ import annotations

from typing import BinaryIO

import numpy as np

from cloudtap.meter.records import OUTPUT_COLUMNS
from cloudtap.meter.writers.rows import csv_style, write_rows
from cloudtap.meter.writers.text import text_columns
from cloudtap.schema.flow import FLOW_DTYPE


def csv_header(names: tuple[str, ...] | list[str]) -> bytes:
    """The header line: every name quoted (Arrow's default)."""
    return (",".join(f'"{n}"' for n in names) + "\n").encode("ascii")


def write_csv(flows: np.ndarray, out: BinaryIO) -> int:
    """Write ``FLOW_DTYPE`` records to ``out`` as CSV with a header; returns the bytes written."""
    if flows.dtype != FLOW_DTYPE:
        raise TypeError(f"expected FLOW_DTYPE, got {flows.dtype}")
    header = csv_header(OUTPUT_COLUMNS)
    out.write(header)
    if len(flows) == 0:
        return len(header)
    return len(header) + write_rows(
        flows, OUTPUT_COLUMNS, text_columns(flows), csv_style(OUTPUT_COLUMNS), out
    )

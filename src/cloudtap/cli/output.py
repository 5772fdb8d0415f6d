"""Write flow tables as csv, jsonl or parquet (files or stdout)."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import IO

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

FORMATS = ("table", "csv", "jsonl", "parquet")


def write_jsonl(table: pa.Table, out: IO[str]) -> None:
    """One JSON object per row, keys in column order."""
    names = table.column_names
    for batch in table.to_batches(max_chunksize=65536):
        columns = [batch.column(i).to_pylist() for i in range(batch.num_columns)]
        for row in zip(*columns, strict=True):
            out.write(json.dumps(dict(zip(names, row, strict=True)), separators=(",", ":")))
            out.write("\n")


def write_table(table: pa.Table, fmt: str, output: Path | None) -> None:
    """Write ``table`` in ``fmt`` to ``output`` (stdout when None; parquet needs a path)."""
    if fmt == "parquet":
        if output is None:
            raise ValueError("--format parquet needs --output PATH")
        pq.write_table(table, output, compression="zstd")
        return
    if fmt == "csv":
        if output is None:
            buf = io.BytesIO()
            pacsv.write_csv(table, buf)
            sys.stdout.write(buf.getvalue().decode())
        else:
            pacsv.write_csv(table, output)
        return
    if fmt == "jsonl":
        if output is None:
            write_jsonl(table, sys.stdout)
        else:
            with open(output, "w", encoding="utf-8") as fh:
                write_jsonl(table, fh)
        return
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")

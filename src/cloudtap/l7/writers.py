"""Write request records as jsonl, csv, parquet or a table, in bulk from one Arrow table.

JSON lines are assembled column-wise by Arrow compute (``binary_join_element_wise``): strings are
already printable ASCII (see :mod:`cloudtap.l7.records`), so escaping is ``\\`` and ``"`` only.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cloudtap.l7.records import OUTPUT_COLUMNS, requests_to_arrow
from cloudtap.schema.request import L7_PROTO_NAMES, REQ_STATUS_NAMES

FORMATS = ("table", "csv", "jsonl", "parquet")
TABLE_WIDTH = 160
_STRING_COLUMNS = {
    "l7_proto",
    "client_ip",
    "server_ip",
    "request_type",
    "resource",
    "host",
    "status",
    "error",
}


def jsonl_bytes(table: pa.Table) -> bytes:
    """The table as JSON lines (one object per row, ``OUTPUT_COLUMNS`` order)."""
    if table.num_rows == 0:
        return b""
    parts: list[pa.Array | str] = []
    for k, name in enumerate(OUTPUT_COLUMNS):
        col = table.column(name)
        sep = ("{" if k == 0 else ",") + f'"{name}":'
        if name in _STRING_COLUMNS:
            text = pc.replace_substring(pc.replace_substring(col, "\\", "\\\\"), '"', '\\"')
            parts += [sep + '"', text, '"']
        else:
            parts += [sep, pc.cast(col, pa.string())]
    parts.append("}\n")
    lines = pc.binary_join_element_wise(*parts, "")
    return b"".join(chunk.buffers()[2].to_pybytes()[: _used(chunk)] for chunk in _chunks(lines))


def _chunks(arr: pa.Array | pa.ChunkedArray) -> list[pa.Array]:
    return list(arr.chunks) if isinstance(arr, pa.ChunkedArray) else [arr]


def _used(chunk: pa.Array) -> int:
    offsets = np.frombuffer(chunk.buffers()[1], np.int32, len(chunk) + 1, chunk.offset * 4)
    return int(offsets[-1])


def _sink(output: Path | None) -> BinaryIO:
    if output is None:
        sys.stdout.flush()
        return sys.stdout.buffer
    return open(output, "wb")


def write_requests(records: np.ndarray, fmt: str, output: Path | None, limit: int = 20) -> None:
    """Write ``L7_DTYPE`` records in ``fmt`` to ``output`` (stdout when None; parquet needs a path)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "table":
        write_table(records, output, limit)
        return
    table = requests_to_arrow(records)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        if output is None:
            raise ValueError("--format parquet needs --output PATH")
        pq.write_table(table, output, compression="zstd")
        return
    if fmt == "csv":
        import pyarrow.csv as pacsv

        buf = io.BytesIO()
        pacsv.write_csv(table, buf)
        payload = buf.getvalue()
    else:
        payload = jsonl_bytes(table)
    fh = _sink(output)
    try:
        fh.write(payload)
        fh.flush()
    finally:
        if output is not None:
            fh.close()


def write_table(records: np.ndarray, output: Path | None, limit: int) -> None:
    """The ``limit`` slowest requests and the count per protocol and status, as Rich tables."""
    from rich.console import Console
    from rich.table import Table

    order = np.argsort(-records["latency_us"], kind="stable")[:limit]
    rows = requests_to_arrow(records[order]).to_pylist()  # at most `limit` rows
    table = Table(title=f"Slowest requests (of {len(records):,})", header_style="bold cyan")
    for name in ("proto", "client", "server", "type", "resource", "status", "code", "latency µs"):
        table.add_column(name, justify="right" if name in ("code", "latency µs") else "left")
    for r in rows:
        table.add_row(
            r["l7_proto"], f"{r['client_ip']}:{r['client_port']}", f"{r['server_ip']}:{r['server_port']}",
            r["request_type"], (r["host"] + r["resource"])[:60], r["status"] + (f" {r['error']}" if r["error"] else ""),
            str(r["code"]), str(r["latency_us"]) if r["latency_us"] >= 0 else "-",
        )  # fmt: skip
    counts = Table(title="Requests by protocol and status", header_style="bold cyan")
    counts.add_column("proto")
    for name in REQ_STATUS_NAMES:
        counts.add_column(name, justify="right")
    grid = np.zeros((len(L7_PROTO_NAMES), len(REQ_STATUS_NAMES)), np.int64)
    np.add.at(grid, (np.minimum(records["l7_proto"], len(L7_PROTO_NAMES) - 1), records["status"] % 5), 1)
    for k in range(1, len(L7_PROTO_NAMES)):
        if grid[k].any():
            counts.add_row(L7_PROTO_NAMES[k], *[f"{v:,}" for v in grid[k]])
    fh = None if output is None else open(output, "w", encoding="utf-8")
    try:
        console = Console(file=fh or sys.stdout, width=TABLE_WIDTH)
        console.print(table)
        console.print(counts)
    finally:
        if fh is not None:
            fh.close()

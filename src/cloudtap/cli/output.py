"""Write flow records as a table, csv, jsonl or parquet (files or stdout), in bulk.

Nothing here formats a record in Python: JSON lines come from a numba formatter, CSV and Parquet
from Arrow writers over a table built from buffers, and the table output sums only what it shows.
Heavy modules (pyarrow writers, rich tables) are imported by the format that needs them.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

if TYPE_CHECKING:
    import numpy as np
    from rich.table import Table

FORMATS = ("table", "csv", "jsonl", "parquet")
#: Console width of ``--format table`` output.
TABLE_WIDTH = 160

_PROTO = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmp6", 132: "sctp", 47: "gre"}
_COLUMNS = (("proto", "left"), ("client", "left"), ("server", "left"), ("packets c→s/s→c", "right"),
            ("bytes c→s", "right"), ("bytes s→c", "right"), ("rtt µs", "right"), ("retrans", "right"),
            ("close", "left"))  # fmt: skip



def top_flows_rich(rows: list[dict[str, Any]], title: str = "Top flows by bytes") -> Table:
    """Rows of :func:`cloudtap.meter.writers.top.top_flows` as the Rich table ``render`` draws."""
    from rich.table import Table
    from rich.text import Text

    from cloudtap.cli.render import human_bytes

    table = Table(title=title, header_style="bold cyan", row_styles=["", "dim"])
    for name, justify in _COLUMNS:
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for row in rows:  # at most --limit rows
        rtt = (
            row["rtt_client_us"] + row["rtt_server_us"]
            if row["rtt_client_us"] >= 0 <= row["rtt_server_us"]
            else None
        )
        retrans = row["retrans_c2s_sum"] + row["retrans_s2c_sum"]
        table.add_row(
            _PROTO.get(row["proto"], str(row["proto"])),
            f"{row['client_ip']}:{row['client_port']}",
            f"{row['server_ip']}:{row['server_port']}",
            f"{row['packets_c2s_sum']}/{row['packets_s2c_sum']}",
            human_bytes(row["bytes_c2s_sum"]),
            human_bytes(row["bytes_s2c_sum"]),
            f"{rtt:.0f}" if rtt is not None else "-",
            Text(str(retrans), style="bold red" if retrans else ""),
            Text(row["close_type"], style="yellow" if row["close_type"] not in ("fin", "forced_end") else ""),
        )
    return table


def _binary_stdout() -> BinaryIO:
    sys.stdout.flush()
    return sys.stdout.buffer


def write_jsonl(flows: np.ndarray, output: Path | None) -> None:
    """JSON lines to ``output`` (stdout when None)."""
    from cloudtap.meter.writers.jsonl import write_jsonl as write

    if output is None:
        write(flows, _binary_stdout())
        sys.stdout.buffer.flush()
        return
    with open(output, "wb") as fh:
        write(flows, fh)


def write_csv(flows: np.ndarray, output: Path | None) -> None:
    """CSV (Arrow's writer: quoted header and strings) to ``output`` (stdout when None)."""
    import pyarrow.csv as pacsv

    from cloudtap.meter.writers.arrow import flows_table

    table = flows_table(flows)
    if output is None:
        buf = io.BytesIO()
        pacsv.write_csv(table, buf)
        sys.stdout.write(buf.getvalue().decode())
    else:
        pacsv.write_csv(table, output)


def write_parquet(flows: np.ndarray, output: Path) -> None:
    """Parquet (zstd) to ``output``."""
    import pyarrow.parquet as pq

    from cloudtap.meter.writers.arrow import flows_table

    pq.write_table(flows_table(flows), output, compression="zstd")


def write_top_table(flows: np.ndarray, output: Path | None, limit: int) -> None:
    """The ``limit`` biggest flows as a Rich table to ``output`` (stdout when None)."""
    from rich.console import Console

    from cloudtap.meter.writers.top import top_flows

    rendered = top_flows_rich(top_flows(flows, limit))
    if output is None:
        Console(file=sys.stdout, width=TABLE_WIDTH).print(rendered)
        return
    with open(output, "w", encoding="utf-8") as fh:
        Console(file=fh, width=TABLE_WIDTH).print(rendered)


def write_flows(flows: np.ndarray, fmt: str, output: Path | None, limit: int = 20) -> None:
    """Write ``FLOW_DTYPE`` records in ``fmt`` to ``output`` (stdout when None; parquet needs a path)."""
    if fmt == "jsonl":
        write_jsonl(flows, output)
    elif fmt == "csv":
        write_csv(flows, output)
    elif fmt == "parquet":
        if output is None:
            raise ValueError("--format parquet needs --output PATH")
        write_parquet(flows, output)
    elif fmt == "table":
        write_top_table(flows, output, limit)
    else:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")

"""Rich renderables built from results; never reads files or queries anything."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc
from rich.console import Console
from rich.table import Table
from rich.text import Text

_PROTO = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmp6", 132: "sctp", 47: "gre"}


def make_console(**kwargs: object) -> Console:
    """A Console that is at least 120 columns wide when the output is not a terminal."""
    console = Console(**kwargs)  # type: ignore[arg-type]
    if not console.is_terminal and "width" not in kwargs:
        console = Console(width=140, **kwargs)  # type: ignore[arg-type]
    return console


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def when(epoch_s: float | None, empty: str = "never") -> str:
    """Epoch seconds -> ``2026-11-20 10:04 UTC`` (``empty`` for None or 0)."""
    if not epoch_s:
        return empty
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%d %H:%M UTC")


def top_flows_table(flows: pa.Table, limit: int = 20, title: str = "Top flows by bytes") -> Table:
    """The ``limit`` biggest flows (records summed per flow_id) as a Rich table."""
    if flows.num_rows:
        summed = flows.group_by(["flow_id"], use_threads=False).aggregate(
            [("bytes_c2s", "sum"), ("bytes_s2c", "sum"), ("packets_c2s", "sum"), ("packets_s2c", "sum"),
             ("retrans_c2s", "sum"), ("retrans_s2c", "sum")]
        )  # fmt: skip
        last = flows.group_by(["flow_id"], use_threads=False).aggregate([("record_seq", "max")])
        keys = flows.join(
            last, keys=["flow_id", "record_seq"], right_keys=["flow_id", "record_seq_max"], join_type="inner"
        )
        keys = keys.select(["flow_id", "proto", "client_ip", "client_port", "server_ip", "server_port",
                            "rtt_client_us", "rtt_server_us", "close_type"])  # fmt: skip
        summed = summed.join(keys, keys="flow_id", join_type="inner")
        total = pc.add(summed["bytes_c2s_sum"], summed["bytes_s2c_sum"])
        summed = summed.append_column("total", total).sort_by([("total", "descending")]).slice(0, limit)
    else:
        summed = None
    table = Table(title=title, header_style="bold cyan", row_styles=["", "dim"])
    for name, justify in (("proto", "left"), ("client", "left"), ("server", "left"), ("packets c→s/s→c", "right"),
                          ("bytes c→s", "right"), ("bytes s→c", "right"), ("rtt µs", "right"),
                          ("retrans", "right"), ("close", "left")):  # fmt: skip
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    if summed is None:
        return table
    for row in summed.to_pylist():
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

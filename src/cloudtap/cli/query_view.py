"""How `cloudtap query` prints an answer: a Rich table (merged endpoints and directions), JSON or CSV."""

from __future__ import annotations

import csv
import json
import sys
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from cloudtap.cli.render import human_bytes, make_console

if TYPE_CHECKING:  # the engine pulls in the store DDL and the meter
    from cloudtap.server.query.engine import QueryResult

FORMATS = ("table", "json", "csv")


def _cell(value: Any, info: dict[str, Any]) -> str | Text:
    name, unit = info["name"], info.get("unit")
    if value is None:
        return Text("-", style="dim")
    if str(info["type"]).startswith(("timestamp", "time of day")) and isinstance(value, str):
        text = value.replace("T", " ").removesuffix("Z")
        return text[: 12 if info["type"] == "time of day" else 23]  # milliseconds at most
    if name == "proto" and isinstance(value, int):
        from cloudtap.server.query.catalog import PROTO_NAMES

        return next((k for k, v in PROTO_NAMES.items() if v == value), str(value))
    if isinstance(value, int | float) and (
        unit in ("bytes", "bytes/s") or (unit is None and "bytes" in name)
    ):
        return human_bytes(float(value)) + ("/s" if unit == "bytes/s" else "")
    if isinstance(value, int | float) and value < 0 and name.startswith(("rtt", "latency")):
        return Text("-", style="dim")  # no handshake RTT / no response
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int) and not name.endswith(("port", "_id", "vlan", "seq")):
        return f"{value:,}"
    return str(value)


def _text(value: str | Text) -> Text:
    return value if isinstance(value, Text) else Text(value)


def _short_time(text: str) -> str:
    return text.replace("T", " ").removesuffix("Z")[:19]


def _merge_endpoints(
    columns: list[dict[str, Any]], rows: list[list[Any]]
) -> tuple[list[dict[str, Any]], list[list[Any]]]:
    """``client_ip`` + ``client_port`` (and server) -> one ``client`` column showing ``ip:port``."""
    names = [c["name"] for c in columns]
    for side in ("client", "server"):
        if f"{side}_ip" in names and f"{side}_port" in names:
            i, j = names.index(f"{side}_ip"), names.index(f"{side}_port")
            for row in rows:
                ip, port = row[i], row[j]
                row[i] = f"[{ip}]:{port}" if ":" in str(ip) else f"{ip}:{port}"
            columns[i] = {**columns[i], "name": side, "type": "string"}
            del columns[j], names[j]
            for row in rows:
                del row[j]
    return columns, rows


_PAIRS = (("packets_c2s", "packets_s2c", "pkts c→s/s→c"), ("bytes_c2s", "bytes_s2c", "bytes c→s/s→c"),
          ("retrans_c2s", "retrans_s2c", "retrans"), ("rtt_client_us", "rtt_server_us", "rtt µs c/s"))  # fmt: skip


def _merge_directions(
    columns: list[dict[str, Any]], rows: list[list[Any]]
) -> tuple[list[dict[str, Any]], list[list[Any]]]:
    """Per-direction pairs of a record listing -> one ``a / b`` column each (narrower tables)."""
    for a, b, label in _PAIRS:
        names = [c["name"] for c in columns]
        if a not in names or b not in names:
            continue
        i, j = names.index(a), names.index(b)
        for row in rows:
            row[i] = f"{_cell(row[i], columns[i])}/{_cell(row[j], columns[j])}"
            del row[j]
        columns[i] = {**columns[i], "name": label, "type": "pair", "unit": None}
        del columns[j]
    return columns, rows


def render_table(result: QueryResult, title: str) -> Table:
    """A Rich table of the answer, with the range and cost as caption."""
    answer = result.to_json()
    meta, stats = result.meta, result.stats
    columns, rows = answer["column_info"], answer["rows"]
    if not any(c["role"] == "metric" for c in columns):
        columns, rows = _merge_endpoints(columns, rows)
        columns, rows = _merge_directions(columns, rows)
    t0, t1 = _short_time(meta.get("time_from", "?")), _short_time(meta.get("time_to", "?"))
    if t0[:10] == t1[:10]:  # one day: the caption carries the date, cells only the time of day
        for k, info in enumerate(columns):
            if info["type"].startswith("timestamp"):
                for row in rows:
                    row[k] = row[k][11:] if isinstance(row[k], str) else row[k]
                columns[k] = {**info, "type": "time of day"}
    span = f"{t0} → {t1} UTC"
    caption = f"{span} · {meta.get('stored_table', '')} · {stats.rows} rows in {stats.elapsed_ms:.0f} ms"
    if stats.truncated:
        caption += " · more rows matched (raise --limit)"
    table = Table(title=title, caption=caption, header_style="bold cyan", row_styles=["", "dim"])
    quiet_units = ("bytes", "packets", "flows", "segments", "records", None)
    for info in columns:
        numeric = info["role"] == "metric" or info["type"].startswith(("uint", "int", "double", "float"))
        unit = info.get("unit")
        header = info["name"] + ("" if unit in quiet_units or unit in info["name"] else f" ({unit})")
        wide = (
            info["type"].startswith(("timestamp", "time of day"))
            or info["name"] in ("client", "server")
            or info["type"] == "pair"
        )
        right = (numeric and info["name"] != "proto") or info["type"] == "pair"
        table.add_column(
            header, justify="right" if right else "left", no_wrap=wide, min_width=min(len(header), 8)
        )
    for row in rows:
        table.add_row(*(_text(_cell(v, c)) for v, c in zip(row, columns, strict=True)))
    return table


def emit(result: QueryResult, fmt: str, title: str, console: Console | None = None) -> None:
    """Print the answer as a table, JSON (the API's shape) or CSV."""
    if fmt == "json":
        sys.stdout.write(json.dumps(result.to_json(), separators=(",", ":")) + "\n")
    elif fmt == "csv":
        answer = result.to_json()
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(answer["columns"])
        writer.writerows(answer["rows"])
    else:
        (console or make_console()).print(render_table(result, title))

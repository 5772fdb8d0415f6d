"""Rich tables of the analysis answers (topology, compare, bursts, drill-down, backtest, signatures).

Each ``show_*`` takes the API's JSON answer (the CLI prints the same from ``--data`` or a server).
Request metrics (latencies in ms) are drawn by :mod:`cloudtap.cli.analyse_requests_view`.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from cloudtap.cli.analyse_requests_view import (
    is_request_metric,
    metric_text,
    show_request_drill,
    show_request_topology,
)
from cloudtap.cli.render import human_bytes


def _b(v: float | None) -> str:
    return "-" if v is None else human_bytes(float(v))


def _num(v: float | None, digits: int = 1) -> str:
    if v is None:
        return "-"
    return f"{v:,.{digits}f}" if isinstance(v, float) and not float(v).is_integer() else f"{int(v):,}"


def _table(title: str, columns: list[str], rows: list[list[str]], caption: str | None = None) -> Table:
    t = Table(title=title, caption=caption, header_style="bold cyan", row_styles=["", "dim"])
    for i, c in enumerate(columns):
        t.add_column(c, justify="left" if i < 2 else "right")
    for r in rows:
        t.add_row(*r)
    return t


def _span(w: dict[str, str] | None) -> str:
    if not w:
        return "-"
    return (
        f"{w['from'].replace('T', ' ').removesuffix('Z')} → {w['to'].replace('T', ' ').removesuffix('Z')} UTC"
    )


def show_topology(a: dict[str, Any], console: Console) -> None:
    """Edges of a topology as a table."""
    if is_request_metric(a.get("metric")):
        cap = (f"{_span(a['window'])} · {a['stored_table']} · {len(a['nodes'])} nodes · "
               f"{len(a['edges'])} of {a['edges_total']} edges · {a['elapsed_ms']:.0f} ms")  # fmt: skip
        show_request_topology(a, console, cap)
        return
    rows = [[e["source_name"], e["target_name"],
             f"{e['server_port']}/{e['proto']}" if e.get("server_port") is not None else ",".join(map(str, e["ports"][:4])),
             _b(e["bytes"]), _b(e["bytes_c2s"]), _b(e["bytes_s2c"]), _num(e["flows"]), _num(e["failed"]),
             _num(e["retrans"]), _num(e["rtt_mean_us"], 0)] for e in a["edges"]]  # fmt: skip
    cap = (f"{_span(a['window'])} · {a['stored_table']} · {len(a['nodes'])} nodes · "
           f"{len(a['edges'])} of {a['edges_total']} edges · {a['elapsed_ms']:.0f} ms")  # fmt: skip
    console.print(_table(f"topology ({a['level']})", ["client", "server", "ports", "bytes", "c→s", "s→c", "flows",
                                                       "failed", "retrans", "rtt µs"], rows, cap))  # fmt: skip


def _change_rows(changes: list[dict[str, Any]], edge: bool, metric: str = "bytes") -> list[list[str]]:
    rows = []
    fmt = metric_text(metric)
    for c in changes:
        bursts = c.get("bursts") or []
        burst = ", ".join(f"{b['start'][11:16]}–{b['end'][11:16]}" for b in bursts[:3]) + (
            " …" if len(bursts) > 3 else ""
        )
        who = [c["source_name"], c["target_name"] or ""] if edge else [c["source_name"], ""]
        port = (
            f"{c['server_port']}/{c.get('l7_proto') or c['proto']}"
            if c.get("server_port") is not None
            else ""
        )
        rel = "new" if c["status"] == "new" else "gone" if c["status"] == "vanished" else (
            f"{c['rel_change'] * 100:+.0f}%" if c["rel_change"] is not None else "-")  # fmt: skip
        rows.append([*who, port, fmt(c["value"]), fmt(c["expected"]), fmt(c["abs_change"]) if c["abs_change"] >= 0
                     else "-" + fmt(-c["abs_change"]), rel, _num(c["z"], 1), burst or "-"])  # fmt: skip
    return rows


def show_compare(a: dict[str, Any], console: Console) -> None:
    """Ranked edges and endpoints, new and vanished edges."""
    head = ["client", "server", "port", a["metric"], "expected", "change", "rel", "z", "bursts"]
    cap = (f"A {_span(a['window'])} vs baseline {_span(a['baseline'])} · {a['stored_table']} · step {a['step_s']} s · "
           f"{a['counts']['new_edges']} new, {a['counts']['vanished_edges']} vanished of {a['counts']['edges']} edges · "
           f"{a['elapsed_ms']:.0f} ms")  # fmt: skip
    m = a["metric"]
    console.print(
        _table(f"edges that changed most (by {a['rank_by']})", head, _change_rows(a["edges"], True, m), cap)
    )
    points = "servers that changed most" if is_request_metric(m) else "endpoints that changed most"
    console.print(_table(points, ["endpoint", "", "", *head[3:]], _change_rows(a["endpoints"], False, m)))
    if a["new_edges"]:
        console.print(_table("new edges", head, _change_rows(a["new_edges"][:10], True, m)))
    if a["vanished_edges"]:
        console.print(_table("vanished edges", head, _change_rows(a["vanished_edges"][:10], True, m)))


def show_bursts(a: dict[str, Any], console: Console) -> None:
    """Burst intervals."""
    rows = [[b["start"].replace("T", " ").removesuffix("Z"), b["end"].replace("T", " ").removesuffix("Z"),
             _num(b["buckets"]), _num(b["total"]), _num(b["peak"]), _num(b["peak_z"])] for b in a["bursts"]]  # fmt: skip
    cap = (f"{_span(a['window'])} · {a['stored_table']} · step {a['step_s']} s · median {_num(a['median'])}, "
           f"sigma {_num(a['sigma'])} · {a['elapsed_ms']:.0f} ms")  # fmt: skip
    console.print(
        _table(f"bursts of {a['metric']}", ["start", "end", "buckets", "total", "peak", "peak z"], rows, cap)
    )


def show_drill(a: dict[str, Any], console: Console) -> None:
    """Composition tables, pushes, failed handshakes, top talkers."""
    cols = ["", "role", "bytes", "out", "in", "flows", "failed", "share"]
    for key, title in (("by_peer", "by peer"), ("by_port", "by server port"), ("by_proto", "by protocol"),
                       ("by_direction", "by direction"), ("by_close_type", "by close type")):  # fmt: skip
        rows = [[p["key"], p.get("role") or "", _b(p["bytes"]), _b(p["bytes_out"]), _b(p["bytes_in"]),
                 _num(p["flows"]), _num(p["failed"]), f"{p['share'] * 100:.1f}%"] for p in a[key]]  # fmt: skip
        cap = f"{a['target']} · {_span(a['window'])} · {a['stored_table']}" if key == "by_peer" else None
        console.print(_table(f"{a['target']}: {title}", cols, rows, cap))
    if a["one_way"]:
        rows = [[f"{p['client_name']} ({p['client']})", f"{p['server_name']} ({p['server']})",
                 f"{p['server_port']}/{p['proto']}", p["direction"], _b(p["bytes_forward"]), _b(p["bytes_back"]),
                 f"{p['ratio']:.1f}"] for p in a["one_way"]]  # fmt: skip
        console.print(
            _table("one-way pushes", ["client", "server", "port", "dir", "forward", "back", "ratio"], rows)
        )
    rows = [[f"{f['client']}", f"{f['server']}:{f['server_port']}", f["close_type"], _num(f["count"]), f["first"][11:19],
             f["last"][11:19]] for f in a["failed_handshakes"]]  # fmt: skip
    console.print(_table(f"failed handshakes ({a['failed_total']})", ["client", "server", "close", "count", "first",
                                                                       "last"], rows))  # fmt: skip
    rows = [[f"{t['client']}:{t['client_port']}", f"{t['server']}:{t['server_port']}", t["proto"], _b(t["bytes_c2s"]),
             _b(t["bytes_s2c"]), t["first"][11:19], t["close_type"]] for t in a["top_talkers"]]  # fmt: skip
    console.print(_table("top talkers", ["client", "server", "proto", "c→s", "s→c", "first", "close"], rows))
    show_request_drill(a, console)


def show_backtest(a: dict[str, Any], console: Console) -> None:
    """Occurrences and periodicity."""
    metric = a["signature"]["condition"]["metric"]
    fmt = metric_text(metric) if is_request_metric(metric) else _num
    # a latency or a rate does not add up over buckets: its occurrences show the peak only
    level = metric.startswith("latency_") or metric == "error_rate"
    rows = [[o["start"].replace("T", " ").removesuffix("Z"), o["end"].replace("T", " ").removesuffix("Z"),
             _num(o["buckets"]), "-" if level else fmt(o["total"]), fmt(o["peak"])] for o in a["occurrences"]]  # fmt: skip
    cap = (f"scanned {_span(a['scanned'])} · {a['stored_table']} · {a['buckets']:,} buckets · "
           f"{a['elapsed_ms']:.0f} ms")  # fmt: skip
    console.print(_table(f"{a['describe']}: {a['count']} occurrences", ["start", "end", "buckets", "total", "peak"],
                         rows, cap))  # fmt: skip
    p = a.get("period")
    if p:
        console.print(f"[bold]periodicity:[/] {p['text']} (regularity {p['regularity']:.0%} over {p['cycles']} gaps); "
                      f"next expected {p['next_expected'].replace('T', ' ').removesuffix('Z')} UTC", highlight=False)  # fmt: skip
    else:
        console.print("[bold]periodicity:[/] fewer than two occurrences", highlight=False)


def show_signatures(a: list[dict[str, Any]], console: Console) -> None:
    """Saved signatures."""
    from cloudtap.server.analyse.signature import Signature

    rows = [[s["name"] or "", Signature.model_validate(s).describe(), s.get("description", "")] for s in a]
    console.print(_table("saved signatures", ["name", "signature", "description"], rows))

"""Rich tables of the request metrics in `cloudtap topology | compare | drill` answers (latencies in ms)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table

from cloudtap.cli.render import human_bytes

_STATS_HEAD = ["requests", "errors", "err %", "avg ms", "p50 ms", "p90 ms", "p99 ms", "max ms"]


def is_request_metric(metric: str | None) -> bool:
    """True for a metric the server reads from the request rollups."""
    from cloudtap.server.analyse.metrics import REQUEST_METRICS

    return metric in REQUEST_METRICS


def ms(v: float | None) -> str:
    """``12.345`` -> ``12.35``; ``-`` without a value."""
    if v is None:
        return "-"
    return f"{v:,.2f}" if abs(v) < 100 else f"{v:,.0f}"


def metric_text(metric: str) -> Callable[[float | None], str]:
    """How one value of ``metric`` reads: bytes, a count, a share, or ms."""

    def count(v: float | None) -> str:
        return "-" if v is None else f"{v:,.0f}"

    def share(v: float | None) -> str:
        return "-" if v is None else f"{v * 100:.2f}%"

    def nbytes(v: float | None) -> str:
        return "-" if v is None else human_bytes(float(v))

    if metric.startswith("latency_"):
        return lambda v: "-" if v is None else f"{ms(v)} ms"
    if metric == "error_rate":
        return share
    return nbytes if metric.startswith("bytes") else count


def stats_cells(s: dict[str, Any] | None) -> list[str]:
    """Cells of one RequestStats (the :data:`_STATS_HEAD` columns)."""
    if not s:
        return ["-"] * len(_STATS_HEAD)
    return [f"{s['requests']:,}", f"{s['errors']:,}", f"{s['error_rate'] * 100:.2f}", ms(s["latency_avg_ms"]),
            ms(s["latency_p50_ms"]), ms(s["latency_p90_ms"]), ms(s["latency_p99_ms"]), ms(s["latency_max_ms"])]  # fmt: skip


def _table(title: str, columns: list[str], rows: list[list[str]], caption: str | None = None,
           numbers: set[int] | None = None) -> Table:  # fmt: skip
    """Columns in ``numbers`` (default: from the fourth on) are right-aligned."""
    t = Table(title=title, caption=caption, header_style="bold cyan", row_styles=["", "dim"])
    for i, c in enumerate(columns):
        right = i >= 3 if numbers is None else i in numbers
        t.add_column(c, justify="right" if right else "left")
    for r in rows:
        t.add_row(*r)
    return t


def show_request_topology(a: dict[str, Any], console: Console, caption: str) -> None:
    """Request edges: client -> server port/protocol with counts, error rate and latencies."""
    rows = [[e["source_name"], e["target_name"], f"{e['server_port']}/{e['l7_proto']}", *stats_cells(e["requests"])]
            for e in a["edges"]]  # fmt: skip
    console.print(_table(f"requests ({a['level']}, by {a['metric']})", ["client", "server", "service", *_STATS_HEAD],
                         rows, caption))  # fmt: skip


def show_request_drill(a: dict[str, Any], console: Console) -> None:
    """The subject's requests by role, its slowest statements / paths and its error codes."""
    if not (a.get("requests") or a.get("slowest") or a.get("error_codes")):
        return
    rows = [[p["role"], "", "", *stats_cells(p["stats"])] for p in a.get("requests", [])]
    console.print(_table(f"{a['target']}: requests", ["role", "", "", *_STATS_HEAD], rows))
    rows = [[s["role"], f"{s['server_port']}/{s['l7_proto']}", _request_text(s["request_type"], s["resource"]),
             *stats_cells(s["stats"])] for s in a.get("slowest", [])]  # fmt: skip
    console.print(_table(f"slowest (by {a.get('metric', 'latency_p99')})", ["role", "service", "request", *_STATS_HEAD],
                         rows))  # fmt: skip
    rows = [[e["role"], e["l7_proto"], e["status"], str(e["code"]), e["error"] or "-", f"{e['count']:,}",
             "; ".join(e["resources"])] for e in a.get("error_codes", [])]  # fmt: skip
    console.print(_table("error codes", ["role", "protocol", "status", "code", "error", "count", "resources"], rows,
                         numbers={3, 5}))  # fmt: skip


def _request_text(request_type: str, resource: str) -> str:
    """``GET /api/cart``; a resource that starts with its type (SQL, Redis) as it is."""
    if resource.upper().startswith(request_type.upper()):
        return resource
    return f"{request_type} {resource}".strip()

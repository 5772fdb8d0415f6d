"""Summarise timed samples into results (ratios, targets, flow agreement) and print them with Rich."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

#: Targets of the meter, printed beside the measurements.
TARGET_SPEEDUP_VS_SOFTFLOWD = 2.0
TARGET_FRACTION_OF_FLOOR = 0.8
TARGET_BYTES_PER_FLOW = 512.0

TIMEOUT_NOTE = (
    "Flow counts differ by design: cloudtap splits a 5-tuple on FIN/RST close + linger and 60 s/300 s idle "
    "(packet time); softflowd reading a file expires only at exit (no timeout fires within one read), so it "
    "merges reused 5-tuples; nfpcapd exports uni-directional records (ICMP: one per packet) and is "
    "compared via `nfdump -b` 5-tuple aggregation; NFStream uses 120 s idle / 1800 s active timeouts "
    "and also splits on FIN/RST."
)


def _ratio(num: float | None, den: float | None) -> float | None:
    return num / den if num and den else None


def summarise(capture: dict[str, Any], tools: dict[str, dict[str, Any]], floor: str) -> dict[str, Any]:
    """Add Mpps, ratios, target verdicts and flow agreement to the per-tool results.

    Args:
        capture: the capture description (``packets``, ``flows_truth``...).
        tools: per-tool results with ``seconds`` (best run) and ``flows``.
        floor: name of the read-floor tool.

    Returns:
        The results document (also written as meter.json).
    """
    packets = capture["packets"]
    ct = tools.get("cloudtap", {})
    ct_s = ct.get("seconds")
    floor_s = tools.get(floor, {}).get("seconds")
    for tool in tools.values():
        s = tool.get("seconds")
        tool["mpps"] = packets / s / 1e6 if s else 0.0
        tool["cloudtap_speedup"] = _ratio(s, ct_s)
        tool["fraction_of_floor"] = _ratio(floor_s, s)
        tool["flows_vs_truth"] = _ratio(_biflows(tool), capture["flows_truth"])
    extra = ct.get("extra", {})
    steady_s = extra.get("steady_s")
    mem: dict[str, Any] = {}
    if extra:
        peak = extra.get("peak_active_flows") or 0
        mem = {
            "bytes_per_flow_slot": extra.get("bytes_per_flow_slot"),
            "table_bytes": extra.get("table_bytes"),
            "max_flows": extra.get("max_flows"),
            "peak_active_flows": peak,
            "table_bytes_per_peak_active_flow": extra["table_bytes"] / peak if peak else None,
        }
    soft_s = tools.get("softflowd", {}).get("seconds")
    targets = {
        "speedup_vs_softflowd": _target(_ratio(soft_s, ct_s), TARGET_SPEEDUP_VS_SOFTFLOWD, ">="),
        "fraction_of_read_floor": _target(_ratio(floor_s, ct_s), TARGET_FRACTION_OF_FLOOR, ">="),
        "bytes_per_flow_slot": _target(mem.get("bytes_per_flow_slot"), TARGET_BYTES_PER_FLOW, "<="),
        "steady_speedup_vs_softflowd": _target(_ratio(soft_s, steady_s), TARGET_SPEEDUP_VS_SOFTFLOWD, ">="),
        "steady_fraction_of_read_floor": _target(_ratio(floor_s, steady_s), TARGET_FRACTION_OF_FLOOR, ">="),
    }
    return {
        "capture": capture,
        "tools": tools,
        "cloudtap_memory": mem,
        "cloudtap_steady": {
            "seconds": steady_s,
            "mpps": packets / steady_s / 1e6 if steady_s else None,
            "stages_s": extra.get("stages"),
            "import_s": extra.get("import_s"),
            "process_wall_s": extra.get("process_wall_s"),
            "fraction_of_floor": _ratio(floor_s, steady_s),
        },
        "targets": targets,
        "flow_count_note": TIMEOUT_NOTE,
    }


def _target(value: float | None, target: float, op: str) -> dict[str, Any]:
    met = None if value is None else (value >= target if op == ">=" else value <= target)
    return {"value": value, "target": target, "op": op, "met": met}


def _biflows(tool: dict[str, Any]) -> int | None:
    """The tool's count of bidirectional flows (nfpcapd: its records aggregated per 5-tuple)."""
    extra = tool.get("extra", {})
    if "biflows_5tuple" in extra:
        return extra["biflows_5tuple"]
    return tool.get("flows")


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def print_report(doc: dict[str, Any], console: Console | None = None) -> None:
    """Print the results table, cloudtap's detail and the targets."""
    console = console or Console()
    cap = doc["capture"]
    console.print(
        f"[bold]capture[/] {cap['path']}: {cap['packets']:,} packets, {_fmt(cap['flows_truth'], ',')} flows (truth), "
        f"{cap['bytes'] / 1e6:,.1f} MB, scenario {cap['scenario']} ({cap['duration_s']:g} s)"
        + (" [cached]" if cap.get("cached") else "")
    )
    table = Table(title="flow metering, one core, best run (warm page cache)")
    for col in (
        "tool",
        "seconds",
        "Mpps",
        "flows",
        "bi flows / truth",
        "cloudtap speed-up",
        "floor / tool",
        "peak RSS",
    ):
        table.add_column(col, justify="left" if col == "tool" else "right")
    for name, tool in doc["tools"].items():
        if not tool.get("available", True) or tool.get("error"):
            table.add_row(name, "-", "-", tool.get("reason") or tool.get("error", "")[:60], "", "", "", "")
            continue
        flows = "-" if tool.get("flows") is None else f"{tool['flows']:,} {tool['flow_unit']}"
        extra = tool.get("extra", {})
        if "biflows_5tuple" in extra:
            flows += f" ({extra['biflows_5tuple']:,} bi 5-tuples)"
        table.add_row(
            name,
            _fmt(tool["seconds"], ".3f"),
            _fmt(tool["mpps"], ".2f"),
            flows,
            _fmt(tool["flows_vs_truth"], ".3f"),
            _fmt(tool["cloudtap_speedup"], ".2f", "x"),
            _fmt(tool["fraction_of_floor"], ".2f", "x"),
            _fmt(tool["peak_rss_kb"] / 1024, ",.0f", " MB"),
        )
    steady = doc["cloudtap_steady"]
    if steady["seconds"]:
        table.add_row(
            "cloudtap, 2nd call",
            _fmt(steady["seconds"], ".3f"),
            _fmt(steady["mpps"], ".2f"),
            "(same)",
            "",
            "",
            _fmt(steady["fraction_of_floor"], ".2f", "x"),
            "",
            style="dim",
        )
    console.print(table)
    if steady["seconds"]:
        console.print(
            f"cloudtap seconds = first meter_file call in a fresh process (numba cache warm, loaded from disk); "
            f"steady state (2nd call): {steady['seconds']:.3f} s = {steady['mpps']:.2f} Mpps; "
            f"interpreter+import {steady['import_s']:.2f} s; process wall {steady['process_wall_s']:.2f} s"
        )
    if steady.get("stages_s"):
        stages = steady["stages_s"]
        total = stages["total"]
        parts = ", ".join(
            f"{k} {v:.3f} s ({v / total:.0%})" for k, v in stages.items() if k != "total" and total > 0
        )
        console.print(f"cloudtap stages (steady pass, {total:.3f} s): {parts}")
    mem = doc["cloudtap_memory"]
    if mem:
        console.print(
            f"cloudtap memory: {mem['bytes_per_flow_slot']:.0f} B per flow slot "
            f"(table {mem['table_bytes'] / 1e6:,.1f} MB for {mem['max_flows']:,} slots); "
            f"table / peak active flows ({mem['peak_active_flows']:,}) = "
            f"{_fmt(mem['table_bytes_per_peak_active_flow'], ',.0f')} B. Peak RSS includes the mmapped capture."
        )
    targets = Table(title="targets")
    for col in ("target", "value", "goal", "met"):
        targets.add_column(col)
    for name, t in doc["targets"].items():
        met = "-" if t["met"] is None else ("[green]yes[/]" if t["met"] else "[red]no[/]")
        targets.add_row(name, _fmt(t["value"], ".2f"), f"{t['op']} {t['target']:g}", met)
    console.print(targets)
    console.print(doc["flow_count_note"], style="dim")

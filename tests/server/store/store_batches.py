"""Agent-shaped batches for the store tests: metered real captures, annotated like ``RecordOutput`` does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from cloudtap.agent.identity import ObservationPoints
from cloudtap.meter import MeterResult, edges_with_text, meter_file
from cloudtap.meter.records import flows_to_arrow
from cloudtap.server.store.ddl import ip_text_sql

#: Real captures used by the round trip: 2013 (old timestamps) and a synthetic one spanning 2023-2026.
EXAMPLE = "PcapPlusPlus/Tests/Pcap++Test/PcapExamples/example.pcap"
MULTI_DAY = "arkime/tests/pcap/arkime_synthetic.pcap"
NS = 1_000_000_000


def annotate(table: pa.Table, agent_id: str, interface: str = "vnet0", domain: str = "vm-a") -> pa.Table:
    """Add the agent's annotation columns (interface, VM, agent id), as ``RecordOutput._annotate``."""
    points = ObservationPoints()
    points.register(interface, vm_mac="52:54:00:12:34:56", domain=domain)
    table = points.annotate(table)
    return table.append_column("agent_id", pa.array([agent_id] * table.num_rows, pa.string()))


def batch_of(result: MeterResult, agent_id: str) -> dict[str, pa.Table]:
    """The three streams an agent ships for ``result``."""
    return {
        "flows": annotate(flows_to_arrow(result.flows), agent_id),
        "edges_1s": annotate(edges_with_text(result.edges(1.0)), agent_id),
        "edges_60s": annotate(edges_with_text(result.edges(60.0)), agent_id),
    }


def metered(pcaps: Path, name: str) -> MeterResult:
    """Meter one shared capture."""
    return meter_file(pcaps / name)


def text(column: str) -> str:
    """SQL rendering an address column as the agent's text."""
    return ip_text_sql(column)


def endpoint_totals(edges: pa.Table) -> dict[str, dict[str, float]]:
    """Python reference of the endpoint views: per IP, what it sent and received over all edges."""
    out: dict[str, dict[str, float]] = {}
    rows = edges.to_pydict()
    for i in range(edges.num_rows):
        for side, ip in ((0, rows["client_ip"][i]), (1, rows["server_ip"][i])):
            e = out.setdefault(ip, {k: 0.0 for k in ("bytes_out", "bytes_in", "packets_out", "packets_in",
                                                      "flows_as_client", "flows_as_server", "rtt_count",
                                                      "rtt_sum_us", "retrans")})  # fmt: skip
            c2s, s2c = rows["bytes_c2s"][i], rows["bytes_s2c"][i]
            pc2s, ps2c = rows["packets_c2s"][i], rows["packets_s2c"][i]
            e["bytes_out"] += c2s if side == 0 else s2c
            e["bytes_in"] += s2c if side == 0 else c2s
            e["packets_out"] += pc2s if side == 0 else ps2c
            e["packets_in"] += ps2c if side == 0 else pc2s
            e["flows_as_client" if side == 0 else "flows_as_server"] += rows["flows_opened"][i]
            e["rtt_count"] += rows["rtt_count"][i]
            e["rtt_sum_us"] += rows["rtt_sum_us"][i]
            e["retrans"] += rows["retrans"][i]
    return out


def hour_sums(edges: pa.Table) -> dict[tuple[int, str, str, int, int], tuple[int, int]]:
    """Python reference of ``edge_1h``: (hour, client, server, port, proto) -> (bytes, flows_opened)."""
    rows = edges.to_pydict()
    out: dict[tuple[int, str, str, int, int], tuple[int, int]] = {}
    hours = (np.asarray(rows["time_ns"]) // (3600 * NS)) * 3600
    for i in range(edges.num_rows):
        key = (
            int(hours[i]),
            rows["client_ip"][i],
            rows["server_ip"][i],
            rows["server_port"][i],
            rows["proto"][i],
        )
        b, f = out.get(key, (0, 0))
        out[key] = (b + rows["bytes_c2s"][i] + rows["bytes_s2c"][i], f + rows["flows_opened"][i])
    return out

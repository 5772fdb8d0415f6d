"""``isolation_crossing``: traffic between two sides a declared rule keeps apart.

Each rule in force becomes one SQL condition on ``edge_1m`` over the minute (projects by id, resolved
from their names as of the minute; CIDRs as address ranges), grouped by edge. Evidence: the edge's
figures, up to five of its flow records in the window, and the ``cloudtap pcap`` call fetching its
packets from the agents.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from cloudtap.server.findings.context import Cycle, edge_args, pcap_command
from cloudtap.server.findings.edges import edges_sql
from cloudtap.server.findings.model import Detection
from cloudtap.server.findings.rules import IsolationRule, Side
from cloudtap.server.store.ddl import ident, ip_text_sql

MAX_EDGES_PER_RULE = 20
EVIDENCE_FLOWS = 5


def _side_sql(side: Side, end: str, cycle: Cycle, params: dict[str, Any], tag: str) -> str:
    if side.project is not None:
        name = side.project
        if name.startswith("id:") and name[3:].isdigit():
            ids = [int(name[3:])]
        else:
            ids = cycle.names.ids("project", name, cycle.at_ns)
        params[tag] = ids or [0]
        return f"e.{end}_project_id IN {{{tag}:Array(UInt32)}}" if ids else "0"
    net = ipaddress.ip_network(side.cidr or "", strict=False)
    lo, hi = net.network_address, net.broadcast_address
    if net.version == 4:
        lo, hi = ipaddress.IPv6Address(f"::ffff:{lo}"), ipaddress.IPv6Address(f"::ffff:{hi}")
    params[tag + "_lo"], params[tag + "_hi"] = str(lo), str(hi)
    return f"e.{end}_ip BETWEEN toIPv6({{{tag}_lo:String}}) AND toIPv6({{{tag}_hi:String}})"


def rule_condition(rule: IsolationRule, cycle: Cycle, params: dict[str, Any]) -> str:
    """SQL condition matching the rule's forbidden edges (bound values added to ``params``)."""
    forward = f"({_side_sql(rule.a, 'client', cycle, params, 'a_c')} AND {_side_sql(rule.b, 'server', cycle, params, 'b_s')})"
    if not rule.both_ways:
        return forward
    back = f"({_side_sql(rule.b, 'client', cycle, params, 'b_c')} AND {_side_sql(rule.a, 'server', cycle, params, 'a_s')})"
    return f"({forward} OR {back})"


def detect_isolation(cycle: Cycle) -> list[Detection]:
    """Edges of the minute that break a rule."""
    out: list[Detection] = []
    for rule in cycle.rules:
        params: dict[str, Any] = {"t0": cycle.t0, "t1": cycle.t1}
        cond = rule_condition(rule, cycle, params)
        sql = edges_sql(cycle.store.database, "edge_1m").replace(
            "WHERE time >=", f"WHERE ({cond}) AND time >=", 1
        )
        rows = cycle.store.query_arrow(
            sql + f" ORDER BY c2s + s2c DESC LIMIT {MAX_EDGES_PER_RULE}", params
        ).to_pylist()
        for row, s in zip(rows, cycle.subjects(rows), strict=True):
            flows = _flows(cycle, s.client_ip, s.server_ip, s.server_port or 0)
            size = float(row["c2s"] + row["s2c"])
            out.append(Detection(
                kind="isolation_crossing", severity=rule.severity, subject=s, time_from=cycle.t0, time_to=cycle.t1,
                summary=f"rule {rule.name!r} ({rule.describe()}) crossed: {s.label}, {int(row['opened'])} flows, "
                        f"{size / 1e3:.3g} kB",
                figures={"rule": rule.name, "rule_version": rule.version, "bytes": size, "flows": float(row["opened"]),
                         "failed": float(row["failed"]), "evidence_flows": flows,
                         "pcap": pcap_command(s, cycle.t0, cycle.t1)},
                baseline={"rule": rule.describe(), "rule_version": rule.version},
                reproduce=f"cloudtap drill {cycle.window_args()} {edge_args(s)}",
            ))  # fmt: skip
    return out


def _flows(cycle: Cycle, client: str, server: str, port: int) -> list[dict[str, Any]]:
    """Up to five flow records of the edge in the window (the evidence), oldest first."""
    rows = cycle.store.query_arrow(
        f"SELECT toString(f.first) AS started, toString(f.last) AS ended, {ip_text_sql('f.client_ip')} AS client, "
        f"f.client_port AS client_port, {ip_text_sql('f.server_ip')} AS server, f.server_port AS port, f.proto AS protocol, "
        f"f.bytes_c2s AS c2s, f.bytes_s2c AS s2c, toString(f.close_type) AS close, f.agent_id AS agent "
        f"FROM {ident(cycle.store.database)}.flow_log AS f WHERE f.client_ip = toIPv6({{c:String}}) "
        f"AND f.server_ip = toIPv6({{s:String}}) AND f.server_port = {{p:UInt16}} "
        f"AND f.first < toDateTime64({{t1:Int64}}, 9, 'UTC') AND f.last >= toDateTime64({{t0:Int64}}, 9, 'UTC') "
        f"ORDER BY f.first LIMIT {EVIDENCE_FLOWS}",
        {"c": client, "s": server, "p": port, "t0": cycle.t0, "t1": cycle.t1},
    )  # fmt: skip
    return rows.to_pylist()  # type: ignore[no-any-return]

"""Topology ("network panorama"): nodes and client -> server edges at a level, for any window.

Edges carry bytes (per direction), packets, flows opened, failed connections, retransmissions and
handshake RTT (sum and count, so the mean stays exact), biggest first by ``metric`` (bytes by default).
With a request ``metric`` (``latency_p99``...) the graph comes from the request rollups instead (see
:mod:`cloudtap.server.analyse.topology_requests`): one edge per client -> server service port. At the vm, ip and subnet levels a node also
names its project (so a drawing can group VMs in their projects). Non-ip levels group by the
``client_<level>_id`` / ``server_<level>_id`` columns the inventory fills; names come from the
:class:`~cloudtap.inventory.names.NameResolver` as they were in the middle of the window.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cloudtap.inventory.names import NameResolver, NoNames
from cloudtap.schema.packet import PROTO_ICMP, PROTO_ICMPV6
from cloudtap.server.analyse._sql import (
    EDGE_SUMS,
    Params,
    check_level,
    proto_name,
    side_key,
    table,
    time_where,
)
from cloudtap.server.analyse.aggregate import Aggregate
from cloudtap.server.analyse.labels import id_names, ip_labels, node_id
from cloudtap.server.analyse.metrics import METRIC_SQL, check_metric, is_request_metric
from cloudtap.server.analyse.request_aggregate import RequestStats
from cloudtap.server.analyse.selector import Selector, edge_where
from cloudtap.server.analyse.window import pick_edge_table, resolve_window

#: Most edges one topology returns.
MAX_EDGES = 5000
#: Levels whose nodes belong to one project.
PROJECT_LEVELS = ("vm", "ip", "subnet")


class TopologyRequest(BaseModel):
    """What graph to draw."""

    model_config = ConfigDict(extra="forbid")

    time_from: str | int | float = Field(..., description="window start: ISO 8601, epoch, -1h, now")
    time_to: str | int | float | None = Field(None, description="window end (default now)")
    level: str = Field("vm", description="ip | subnet | vm | host | project")
    filter: Selector = Field(default_factory=Selector)
    by_port: bool = Field(False, description="one edge per server port and protocol")
    metric: str = Field("bytes", description="edges kept biggest first by this: an edge metric (bytes, packets, "
                        "flows, failed, retrans...) or a request metric (requests, errors, error_rate, "
                        "latency_avg, latency_p50/p90/p99, latency_max: ms), read from the request rollups")
    limit: int = Field(500, ge=1, le=MAX_EDGES, description="edges kept, biggest by metric")
    dedup: bool = Field(True, description="count traffic seen by two agents once")


class TopoEdge(BaseModel):
    """client -> server at the level."""

    source: str
    target: str
    source_name: str
    target_name: str
    server_port: int | None = None
    proto: str | None = None
    l7_proto: str | None = Field(default=None, description="request topology: http, dns, mysql, pgsql, redis")
    ports: list[int] = Field(default_factory=list, description="some server ports of the edge")
    bytes: int = Field(default=0, description="0 in a request topology (the request rollups hold no traffic)")
    bytes_c2s: int = 0
    bytes_s2c: int = 0
    packets: int = 0
    flows: int = 0
    failed: int = 0
    retrans: int = 0
    rtt_sum_us: float = 0.0
    rtt_count: int = 0
    rtt_mean_us: float | None = None
    requests: RequestStats | None = Field(default=None, description="request topology: the edge's requests")


class TopoNode(BaseModel):
    """A node with its traffic as client (out) and server (in) over the kept edges."""

    id: str
    name: str
    level: str
    bytes_as_client: int = 0
    bytes_as_server: int = 0
    requests_as_client: int = 0
    requests_as_server: int = 0
    peers: int = 0
    project: str | None = Field(None, description="vm, ip, subnet levels: its project")


class Topology(BaseModel):
    """The graph."""

    level: str
    window: dict[str, str]
    stored_table: str
    metric: str = "bytes"
    nodes: list[TopoNode]
    edges: list[TopoEdge]
    edges_total: int = Field(description="edges in the window before the limit")
    truncated: bool
    elapsed_ms: float


def topology(store: Any, request: TopologyRequest, names: NameResolver | None = None,
             now_ns: int | None = None) -> Topology:  # fmt: skip
    """Build the topology of ``request`` from the edge rollups.

    Raises:
        AnalysisError: bad window, level, filter value or name.
    """
    started = time.perf_counter()
    names = names or NoNames()
    level = check_level(request.level)
    metric = check_metric(request.metric, derived=False)
    window = resolve_window(request.time_from, request.time_to, now_ns)
    if is_request_metric(metric):
        from cloudtap.server.analyse.topology_requests import request_topology

        return request_topology(store, request, level, window, names, started)
    name, _ = pick_edge_table(store, [window])
    params = Params()
    where = [time_where(window.start_ns, window.end_ns, params)]
    where += edge_where(request.filter, params, names, window.mid_ns)
    (c_expr, _), (s_expr, _) = side_key(level, "client"), side_key(level, "server")
    keys = [(c_expr, "src"), (s_expr, "dst")]
    if request.by_port:
        keys += [("server_port", "server_port"), ("proto", "proto")]
    # ICMP "ports" are echo identifiers, not services: an edge's port list names TCP/UDP/SCTP services only
    extra = [(f"groupUniqArrayIf(8)(server_port, proto NOT IN ({PROTO_ICMP}, {PROTO_ICMPV6}))",
              "arrayDistinct(flatten(groupArray({a})))", "ports")]  # fmt: skip
    if level == "ip":
        extra += [("max(client_vm_id)", "max({a})", "src_vm"), ("max(server_vm_id)", "max({a})", "dst_vm")]
    if level in PROJECT_LEVELS:
        extra += [("max(client_project_id)", "max({a})", "src_project"),
                  ("max(server_project_id)", "max({a})", "dst_project")]  # fmt: skip
    agg = Aggregate(table(store.database, name), keys, [(s, s) for s in EDGE_SUMS], where, None,
                    request.dedup, extra)  # fmt: skip
    sql = (
        f"SELECT *, count() OVER () AS _total FROM ({agg.sql()}) "
        f"ORDER BY {METRIC_SQL[metric]} DESC, bytes_c2s + bytes_s2c DESC, src, dst LIMIT {int(request.limit)}"
    )
    rows = store.query_arrow(sql, params.values).to_pylist()
    total = int(rows[0]["_total"]) if rows else 0
    labels = labels_of(names, level, rows, window.mid_ns)
    edges = [_edge(level, r, labels, request.by_port) for r in rows]
    return Topology(
        level=level, window=window.to_json(), stored_table=name, metric=metric,
        nodes=nodes_of(level, edges, projects_of(names, level, rows, window.mid_ns)), edges=edges,
        edges_total=total, truncated=total > len(edges), elapsed_ms=round((time.perf_counter() - started) * 1000, 2),
    )  # fmt: skip


def labels_of(names: NameResolver, level: str, rows: list[dict[str, Any]], at_ns: int) -> dict[Any, str]:
    if level == "ip":
        ip_vm: dict[str, int] = {}
        for r in rows:
            ip_vm[r["src"]] = max(ip_vm.get(r["src"], 0), int(r["src_vm"]))
            ip_vm[r["dst"]] = max(ip_vm.get(r["dst"], 0), int(r["dst_vm"]))
        return dict(ip_labels(names, ip_vm, at_ns))
    return dict(id_names(names, level, [r["src"] for r in rows] + [r["dst"] for r in rows], at_ns))


def projects_of(names: NameResolver, level: str, rows: list[dict[str, Any]], at_ns: int) -> dict[str, str]:
    """node id -> its project's name (vm, ip and subnet levels; nodes of no known project are left out)."""
    if level not in PROJECT_LEVELS:
        return {}
    of: dict[str, int] = {}
    for r in rows:
        for key, project in ((r["src"], r["src_project"]), (r["dst"], r["dst_project"])):
            nid = node_id(level, key)
            of[nid] = max(of.get(nid, 0), int(project))
    labels = id_names(names, "project", [p for p in of.values() if p], at_ns)
    return {nid: labels[p] for nid, p in of.items() if p}


def _edge(level: str, r: dict[str, Any], labels: dict[Any, str], by_port: bool) -> TopoEdge:
    rtt_count = int(r["rtt_count"])
    return TopoEdge(
        source=node_id(level, r["src"]), target=node_id(level, r["dst"]),
        source_name=labels[r["src"]], target_name=labels[r["dst"]],
        server_port=int(r["server_port"]) if by_port else None,
        proto=proto_name(int(r["proto"])) if by_port else None,
        ports=sorted(int(p) for p in r["ports"])[:8],
        bytes=int(r["bytes_c2s"]) + int(r["bytes_s2c"]), bytes_c2s=int(r["bytes_c2s"]), bytes_s2c=int(r["bytes_s2c"]),
        packets=int(r["packets_c2s"]) + int(r["packets_s2c"]), flows=int(r["flows_opened"]),
        failed=int(r["flows_failed"]), retrans=int(r["retrans"]), rtt_sum_us=float(r["rtt_sum_us"]),
        rtt_count=rtt_count, rtt_mean_us=float(r["rtt_sum_us"]) / rtt_count if rtt_count else None,
    )  # fmt: skip


def nodes_of(level: str, edges: list[TopoEdge], projects: dict[str, str]) -> list[TopoNode]:
    """The nodes of ``edges``, busiest first (by bytes, then requests)."""
    nodes: dict[str, TopoNode] = {}
    peers: dict[str, set[str]] = {}
    for e in edges:
        for nid, name in ((e.source, e.source_name), (e.target, e.target_name)):
            nodes.setdefault(nid, TopoNode(id=nid, name=name, level=level, project=projects.get(nid)))
        nodes[e.source].bytes_as_client += e.bytes
        nodes[e.target].bytes_as_server += e.bytes
        if e.requests is not None:
            nodes[e.source].requests_as_client += e.requests.requests
            nodes[e.target].requests_as_server += e.requests.requests
        peers.setdefault(e.source, set()).add(e.target)
        peers.setdefault(e.target, set()).add(e.source)
    for nid, node in nodes.items():
        node.peers = len(peers[nid])
    return sorted(nodes.values(), key=lambda n: (-(n.bytes_as_client + n.bytes_as_server),
                                                 -(n.requests_as_client + n.requests_as_server)))  # fmt: skip

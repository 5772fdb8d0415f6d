"""Topology of application requests: client -> server service port edges from the request rollups.

An edge is (client, server, server port, application protocol) at the level; it carries its
:class:`~cloudtap.server.analyse.request_aggregate.RequestStats` (counts, error rate, latency average,
p50 / p90 / p99 from the merged t-digests and maximum, in ms). Edges are kept biggest first by the
request metric asked for (``latency_p99``: the slowest services first).
"""

from __future__ import annotations

import time
from typing import Any

from cloudtap.inventory.names import NameResolver
from cloudtap.server.analyse._sql import Params, side_key, table, time_where
from cloudtap.server.analyse.labels import node_id
from cloudtap.server.analyse.metrics import REQUEST_METRIC_SQL
from cloudtap.server.analyse.request_aggregate import RequestAggregate, RequestStats
from cloudtap.server.analyse.selector import check_request_filter, edge_where
from cloudtap.server.analyse.topology import (
    PROJECT_LEVELS,
    TopoEdge,
    Topology,
    TopologyRequest,
    labels_of,
    nodes_of,
    projects_of,
)
from cloudtap.server.analyse.window import Window, pick_edge_table


def request_topology(store: Any, request: TopologyRequest, level: str, window: Window, names: NameResolver,
                     started: float) -> Topology:  # fmt: skip
    """The request graph of ``request`` (its metric is a request metric, its level checked).

    Raises:
        AnalysisError: a bad filter value or name, a ``proto`` filter.
    """
    check_request_filter(request.filter, "filter")
    name, _ = pick_edge_table(store, [window], family="request")
    params = Params()
    where = [time_where(window.start_ns, window.end_ns, params)]
    where += edge_where(request.filter, params, names, window.mid_ns)
    (c_expr, _), (s_expr, _) = side_key(level, "client"), side_key(level, "server")
    keys = [(c_expr, "src"), (s_expr, "dst"), ("server_port", "server_port"), ("l7_proto", "l7_proto")]
    extra = []
    if level == "ip":
        extra += [("max(client_vm_id)", "max({a})", "src_vm"), ("max(server_vm_id)", "max({a})", "dst_vm")]
    if level in PROJECT_LEVELS:
        extra += [("max(client_project_id)", "max({a})", "src_project"),
                  ("max(server_project_id)", "max({a})", "dst_project")]  # fmt: skip
    agg = RequestAggregate(table(store.database, name), keys, where, None, request.dedup, extra)
    order = REQUEST_METRIC_SQL[request.metric]
    sql = (
        f"SELECT *, count() OVER () AS _total FROM ({agg.sql()}) "
        f"ORDER BY {order} DESC, requests DESC, src, dst, server_port, l7_proto LIMIT {int(request.limit)}"
    )
    rows = store.query_arrow(sql, params.values).to_pylist()
    total = int(rows[0]["_total"]) if rows else 0
    labels = labels_of(names, level, rows, window.mid_ns)
    edges = [
        TopoEdge(
            source=node_id(level, r["src"]),
            target=node_id(level, r["dst"]),
            source_name=labels[r["src"]],
            target_name=labels[r["dst"]],
            server_port=int(r["server_port"]),
            l7_proto=str(r["l7_proto"]),
            ports=[int(r["server_port"])],
            requests=RequestStats.of(r),
        )  # fmt: skip
        for r in rows
    ]
    return Topology(
        level=level, window=window.to_json(), stored_table=name, metric=request.metric,
        nodes=nodes_of(level, edges, projects_of(names, level, rows, window.mid_ns)), edges=edges,
        edges_total=total, truncated=total > len(edges), elapsed_ms=round((time.perf_counter() - started) * 1000, 2),
    )  # fmt: skip

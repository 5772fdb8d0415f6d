"""Requests of a drill-down's subject, from ``request_log``: by role, slowest statements, error codes.

Read from the raw log in the window (so percentiles are exact: ``quantilesExactInclusive``, numpy's
default linear interpolation), in the caller's project scope like every read. The subject's role is
``server`` for requests it served and ``client`` for those it sent (an edge target: its client).

* ``requests``: per role, the :class:`RequestStats` of all its requests;
* ``slowest``: per (role, application protocol, server port, request type, resource), its count, errors
  and latencies, ranked by the drill's request ``metric`` (``latency_p99`` by default, then the maximum);
* ``error_codes``: per (role, protocol, status, code, error), the count and the most frequent resources.

A request seen by two agents counts once: each group takes the values of the agent that saw most of it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from cloudtap.inventory.names import NameResolver
from cloudtap.server.analyse._sql import Params, table
from cloudtap.server.analyse.errors import AnalysisError
from cloudtap.server.analyse.metrics import REQUEST_METRIC_SQL, REQUEST_METRICS
from cloudtap.server.analyse.request_aggregate import RequestStats
from cloudtap.server.analyse.selector import Selector, edge_where, subject_side_sql
from cloudtap.server.analyse.window import Window

#: (alias, aggregate over request_log rows), per group and agent.
_INNER = (
    ("_n", "count()"),
    ("_ce", "countIf(status = 'client_error')"),
    ("_se", "countIf(status = 'server_error')"),
    ("_to", "countIf(status IN ('timeout', 'unanswered'))"),
    ("_an", "countIf(latency_us >= 0)"),
    ("_ls", "sumIf(latency_us, latency_us >= 0)"),
    ("_lm", "maxIf(latency_us, latency_us >= 0)"),
    ("_q", "quantilesExactInclusiveIf(0.5, 0.9, 0.99)(toFloat64(latency_us), latency_us >= 0)"),
)


class SlowRequest(BaseModel):
    """One statement / path / query name, with its latencies (ms; None without answers)."""

    role: str = Field(description="the subject as server (served) or client (sent)")
    l7_proto: str
    server_port: int
    request_type: str = Field(description="HTTP method, SQL command, DNS type, Redis command")
    resource: str = Field(description="HTTP path, SQL fingerprint, DNS name, Redis command")
    stats: RequestStats


class ErrorCode(BaseModel):
    """Failed requests of one code / error."""

    role: str
    l7_proto: str
    status: str = Field(description="client_error, server_error, timeout, unanswered")
    code: int = Field(description="HTTP status, DNS rcode, MySQL error number; -1 without response")
    error: str = Field(description="SQLSTATE, Redis error word, DNS rcode name")
    count: int
    resources: list[str] = Field(description="its most frequent resources (up to 3)")


class RolePart(BaseModel):
    """All requests of the subject in one role."""

    role: str
    stats: RequestStats


def check_request_metric(name: str, field: str = "metric") -> str:
    """``name`` if it is a request metric."""
    if name not in REQUEST_METRICS:
        raise AnalysisError(f"unknown request metric {name!r}", field, REQUEST_METRICS)
    return name


class RequestDrill:
    """The request sections of one drill-down (subject ``sel`` in ``window``)."""

    def __init__(self, store: Any, names: NameResolver, sel: Selector, window: Window, dedup: bool) -> None:
        self.store, self.names, self.sel, self.window, self.dedup = store, names, sel, window, dedup
        self.source = table(store.database, "request_log")

    def _where(self, params: Params) -> tuple[str, str]:
        """(conditions, SQL that is 1 when the subject is the client)."""
        w = self.window
        a, b = params.bind(w.start_ns, "Int64"), params.bind(w.end_ns, "Int64")
        where = [f"req >= fromUnixTimestamp64Nano({a}, 'UTC') AND req < fromUnixTimestamp64Nano({b}, 'UTC')"]
        where += edge_where(self.sel, params, self.names, w.mid_ns)
        side = subject_side_sql(self.sel, params, self.names, w.mid_ns)
        if side is None:
            side = "1" if self.sel.client_ip or not self.sel.server_ip else "0"
        return " AND ".join(where), side

    def _grouped(self, keys: list[tuple[str, str]], order: str, limit: int) -> list[dict[str, Any]]:
        """Rows of ``keys`` + the request columns, ``ORDER BY order LIMIT limit``."""
        params = Params()
        where, side = self._where(params)
        keys = [(e.format(side=side), a) for e, a in keys]
        group = [f"_k{i}" for i in range(len(keys))]
        inner = [f"{e} AS _k{i}" for i, (e, _) in enumerate(keys)] + [f"{agg} AS {a}" for a, agg in _INNER]
        by_agent = ["agent_id AS _agent"] if self.dedup else []
        inner_sql = (f"SELECT {', '.join(inner + by_agent)} FROM {self.source} WHERE {where} "
                     f"GROUP BY {', '.join(group + (['_agent'] if self.dedup else []))}")  # fmt: skip
        aliases = ", ".join(a for a, _ in _INNER)
        if self.dedup:
            middle = f"SELECT {', '.join(group)}, argMax(tuple({aliases}), tuple(_n, _agent)) AS _t FROM ({inner_sql}) GROUP BY {', '.join(group)}"
        else:
            middle = f"SELECT {', '.join(group)}, tuple({aliases}) AS _t FROM ({inner_sql})"
        cols = [f"tupleElement(_t, {i + 1}) AS {a}" for i, (a, _) in enumerate(_INNER)]
        sql = (
            f"SELECT {', '.join(f'_k{i} AS {a}' for i, (_, a) in enumerate(keys))}, "
            f"toUInt64(_n) AS requests, toUInt64(_ce) AS client_errors, toUInt64(_se) AS server_errors, "
            f"toUInt64(_to) AS timeouts, toUInt64(_ce + _se + _to) AS errors, toUInt64(_an) AS answered, "
            f"toFloat64(_ls) AS latency_sum_us, toFloat64(_lm) AS latency_max_us, "
            f"if(_an > 0, _q[1], 0) AS latency_p50_us, if(_an > 0, _q[2], 0) AS latency_p90_us, "
            f"if(_an > 0, _q[3], 0) AS latency_p99_us FROM ("
            f"SELECT {', '.join(group)}, {', '.join(cols)} FROM ({middle}))"
        )
        rows: list[dict[str, Any]] = self.store.query_arrow(
            f"SELECT * FROM ({sql}) ORDER BY {order} LIMIT {int(limit)}", params.values
        ).to_pylist()
        return rows

    def by_role(self) -> list[RolePart]:
        """All the subject's requests per role."""
        rows = self._grouped([("if({side}, 'client', 'server')", "role")], "role DESC", 2)
        return [RolePart(role=r["role"], stats=RequestStats.of(r)) for r in rows]

    def slowest(self, metric: str, limit: int) -> list[SlowRequest]:
        """Statements / paths ranked by ``metric`` (then the maximum latency, the count)."""
        keys = [("if({side}, 'client', 'server')", "role"), ("toString(l7_proto)", "l7_proto"),
                ("server_port", "server_port"), ("toString(request_type)", "request_type"), ("resource", "resource")]  # fmt: skip
        order = f"{REQUEST_METRIC_SQL[metric]} DESC, latency_max_us DESC, requests DESC, resource"
        rows = self._grouped(keys, order, limit)
        return [SlowRequest(role=r["role"], l7_proto=r["l7_proto"], server_port=int(r["server_port"]),
                            request_type=r["request_type"], resource=r["resource"], stats=RequestStats.of(r))
                for r in rows]  # fmt: skip

    def error_codes(self, limit: int) -> list[ErrorCode]:
        """Failed requests per code and error, most frequent first."""
        params = Params()
        where, side = self._where(params)
        keys = (f"if({side}, 'client', 'server') AS role, toString(l7_proto) AS l7, toString(status) AS st, "
                "code, toString(error) AS err")  # fmt: skip
        group = "role, l7, st, code, err"
        agent = ", agent_id AS _agent" if self.dedup else ""
        inner = (f"SELECT {keys}{agent}, count() AS _n, topK(3)(resource) AS _res FROM {self.source} "
                 f"WHERE {where} AND status != 'ok' GROUP BY {group}{', _agent' if self.dedup else ''}")  # fmt: skip
        if self.dedup:
            middle = f"SELECT {group}, argMax(tuple(_n, _res), tuple(_n, _agent)) AS _t FROM ({inner}) GROUP BY {group}"
        else:
            middle = f"SELECT {group}, tuple(_n, _res) AS _t FROM ({inner})"
        rows = self.store.query_arrow(
            f"SELECT {group}, tupleElement(_t, 1) AS n, tupleElement(_t, 2) AS res FROM ({middle}) "
            f"ORDER BY n DESC, {group} LIMIT {int(limit)}", params.values,
        ).to_pylist()  # fmt: skip
        return [ErrorCode(role=r["role"], l7_proto=r["l7"], status=r["st"], code=int(r["code"]), error=r["err"],
                          count=int(r["n"]), resources=list(r["res"])) for r in rows]  # fmt: skip

"""Drill-down into an edge, an endpoint (IP) or a VM in a window.

The *subject* is the VM or IP (``target.vm`` / ``target.ip``), or the client of an edge
(``target.client_ip`` + ``target.server_ip`` [+ ``port``]). The answer:

* composition of the subject's traffic by peer, by server port, by protocol and by direction (bytes
  out of / into the subject, as client / as server), from the edge rollups;
* close types (each flow counted once, by how its last record in the window ended; ``ongoing``: still
  open at the window's end) and failed handshakes (``syn_unanswered``, ``server_refused``, ``half_open``) and the top
  talkers (connections by bytes), from the flow log;
* one-way pushes: client -> server:port edges whose bigger direction carries at least ``push_ratio``
  times the smaller one and at least ``push_min_bytes``;
* its application requests by role, its slowest statements / paths (ranked by the request ``metric``) and
  its error codes, from the request log (see :mod:`cloudtap.server.analyse.drill_requests`).
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cloudtap.inventory.names import NameResolver, NoNames
from cloudtap.server.analyse._sql import (
    FAILED_CLOSE_TYPES,
    Params,
    flow_time_where,
    ip_text,
    proto_name,
    table,
    time_where,
)
from cloudtap.server.analyse.aggregate import Aggregate
from cloudtap.server.analyse.drill_requests import (
    ErrorCode,
    RequestDrill,
    RolePart,
    SlowRequest,
    check_request_metric,
)
from cloudtap.server.analyse.errors import AnalysisError
from cloudtap.server.analyse.labels import ip_labels
from cloudtap.server.analyse.metrics import oneway_ratio
from cloudtap.server.analyse.selector import Selector, edge_where, subject_side_sql
from cloudtap.server.analyse.window import Window, pick_edge_table, resolve_window


class DrillRequest(BaseModel):
    """What to drill into."""

    model_config = ConfigDict(extra="forbid")

    time_from: str | int | float
    time_to: str | int | float | None = None
    target: Selector = Field(description="vm, ip, or client_ip + server_ip [+ port] for an edge")
    limit: int = Field(10, ge=1, le=1000, description="rows per composition table")
    push_ratio: float = Field(10.0, gt=1, description="one-way push: bigger / smaller direction at least this")
    push_min_bytes: int = Field(1_000_000, ge=0, description="one-way push: at least this many bytes")
    metric: str = Field("latency_p99", description="request metric ranking `slowest`: latency_p99, latency_max, "
                        "latency_avg, latency_p50, latency_p90, requests, errors, error_rate")
    dedup: bool = True


class Part(BaseModel):
    """One slice of the subject's traffic."""

    key: str = Field(description="peer name/IP, port/proto, protocol or direction")
    peer_ip: str | None = None
    role: str | None = Field(None, description="the subject as client or server")
    bytes: int
    bytes_out: int = Field(description="sent by the subject")
    bytes_in: int = Field(description="received by the subject")
    packets: int
    flows: int
    failed: int
    share: float = Field(description="fraction of the subject's bytes")


class Push(BaseModel):
    """A one-way edge."""

    client: str
    client_name: str
    server: str
    server_name: str
    server_port: int
    proto: str
    direction: str = Field(description="c2s (client pushes) or s2c (server pushes)")
    bytes_forward: int
    bytes_back: int
    ratio: float
    from_ip: str
    to_ip: str


class Talker(BaseModel):
    """One connection, by bytes."""

    client: str
    client_port: int
    server: str
    server_port: int
    proto: str
    bytes_c2s: int
    bytes_s2c: int
    first: str
    last: str
    close_type: str


class FailedHandshake(BaseModel):
    """Failed connection attempts client -> server:port of one close type."""

    client: str
    server: str
    server_port: int
    proto: str
    close_type: str
    count: int
    first: str
    last: str


class DrillResult(BaseModel):
    """The composition of the subject's traffic."""

    window: dict[str, str]
    target: str
    stored_table: str
    total_bytes: int
    by_peer: list[Part]
    by_port: list[Part]
    by_proto: list[Part]
    by_direction: list[Part]
    by_close_type: list[Part]
    one_way: list[Push]
    top_talkers: list[Talker]
    failed_handshakes: list[FailedHandshake]
    failed_total: int
    requests: list[RolePart] = Field(default_factory=list, description="the subject's requests by role")
    slowest: list[SlowRequest] = Field(default_factory=list, description="statements / paths by the metric")
    error_codes: list[ErrorCode] = Field(default_factory=list, description="failed requests by code / error")
    metric: str = "latency_p99"
    elapsed_ms: float


def drill(store: Any, request: DrillRequest, names: NameResolver | None = None,
          now_ns: int | None = None) -> DrillResult:  # fmt: skip
    """Break down the traffic of ``request.target`` in the window.

    Raises:
        AnalysisError: no target, bad window, value or name.
    """
    started = time.perf_counter()
    names = names or NoNames()
    sel = request.target
    if not (sel.vm or sel.ip or sel.client_ip or sel.server_ip):
        raise AnalysisError("target needs vm, ip, or client_ip/server_ip (an edge)", "target")
    metric = check_request_metric(request.metric)
    window = resolve_window(request.time_from, request.time_to, now_ns)
    stored, _ = pick_edge_table(store, [window])
    d = _Drill(store, names, request, window, stored)
    by_peer = d.parts("peer")
    by_port = d.parts("port")
    by_proto = d.parts("proto")
    directions = d.parts("direction", limit=4)
    total = sum(p.bytes for p in directions)
    for group in (by_peer, by_port, by_proto, directions):
        for p in group:
            p.share = round(p.bytes / total, 4) if total else 0.0
    closes, failed, failed_total, talkers = d.flows()
    for p in closes:
        p.share = round(p.bytes / max(1, sum(c.bytes for c in closes)), 4)
    served = RequestDrill(store, names, sel, window, request.dedup)
    return DrillResult(
        window=window.to_json(), target=sel.describe(), stored_table=stored, total_bytes=total, by_peer=by_peer,
        by_port=by_port, by_proto=by_proto, by_direction=directions, by_close_type=closes, one_way=d.pushes(),
        top_talkers=talkers, failed_handshakes=failed, failed_total=failed_total, requests=served.by_role(),
        slowest=served.slowest(metric, request.limit), error_codes=served.error_codes(request.limit), metric=metric,
        elapsed_ms=round((time.perf_counter() - started) * 1000, 2),
    )  # fmt: skip


class _Drill:
    def __init__(self, store: Any, names: NameResolver, request: DrillRequest, window: Window, stored: str) -> None:
        self.store, self.names, self.request, self.window, self.stored = store, names, request, window, stored
        self.db = store.database

    def _base(self, params: Params, flows: bool = False) -> tuple[list[str], str]:
        sel = self.request.target
        w = self.window
        where = [flow_time_where(w.start_ns, w.end_ns, params) if flows else time_where(w.start_ns, w.end_ns, params)]
        where += edge_where(sel, params, self.names, w.mid_ns)
        side = subject_side_sql(sel, params, self.names, w.mid_ns)
        if side is None:
            side = "1" if sel.client_ip or not sel.server_ip else "0"
        return where, side

    def parts(self, by: str, limit: int | None = None) -> list[Part]:
        params = Params()
        where, side = self._base(params)
        out = f"if({side}, bytes_c2s, bytes_s2c)"
        inn = f"if({side}, bytes_s2c, bytes_c2s)"
        role = f"if({side}, 'client', 'server')"
        keys = {
            "peer": [(f"if({side}, {ip_text('server_ip')}, {ip_text('client_ip')})", "peer"),
                     (f"if({side}, server_vm_id, client_vm_id)", "peer_vm"), (role, "role")],
            "port": [("server_port", "server_port"), ("proto", "proto"), (role, "role")],
            "proto": [("proto", "proto")],
            "direction": [(role, "role")],
        }[by]  # fmt: skip
        sums = [(out, "bytes_out"), (inn, "bytes_in"), ("packets_c2s + packets_s2c", "packets"),
                ("flows_opened", "flows"), ("flows_failed", "failed")]  # fmt: skip
        agg = Aggregate(table(self.db, self.stored), keys, sums, where, None, self.request.dedup)
        n = int(limit or self.request.limit)
        rows = self.store.query_arrow(
            f"SELECT * FROM ({agg.sql()}) ORDER BY bytes_out + bytes_in DESC LIMIT {n}", params.values
        ).to_pylist()
        labels = ip_labels(self.names, {r["peer"]: int(r["peer_vm"]) for r in rows}, self.window.mid_ns) if by == "peer" else {}
        parts = []
        for r in rows:
            if by == "peer":
                key = labels.get(r["peer"], r["peer"])
            elif by == "port":
                key = f"{r['server_port']}/{proto_name(int(r['proto']))}"
            elif by == "proto":
                key = proto_name(int(r["proto"]))
            else:
                key = f"as {r['role']}"
            parts.append(Part(
                key=key, peer_ip=r.get("peer"), role=r.get("role"), bytes=int(r["bytes_out"]) + int(r["bytes_in"]),
                bytes_out=int(r["bytes_out"]), bytes_in=int(r["bytes_in"]), packets=int(r["packets"]),
                flows=int(r["flows"]), failed=int(r["failed"]), share=0.0,
            ))  # fmt: skip
        return parts

    def pushes(self) -> list[Push]:
        params = Params()
        where, _ = self._base(params)
        keys = [(ip_text("client_ip"), "client"), (ip_text("server_ip"), "server"), ("server_port", "server_port"),
                ("proto", "proto")]  # fmt: skip
        extra = [("max(client_vm_id)", "max({a})", "cvm"), ("max(server_vm_id)", "max({a})", "svm")]
        agg = Aggregate(table(self.db, self.stored), keys, [("bytes_c2s", "c2s"), ("bytes_s2c", "s2c")], where,
                        None, self.request.dedup, extra)  # fmt: skip
        ratio = params.bind(float(self.request.push_ratio), "Float64")
        floor = params.bind(int(self.request.push_min_bytes), "UInt64")
        sql = (
            f"SELECT * FROM ({agg.sql()}) WHERE c2s + s2c >= {floor} "
            f"AND greatest(c2s, s2c) >= {ratio} * (least(c2s, s2c) + 1) "
            f"ORDER BY c2s + s2c DESC LIMIT {int(self.request.limit)}"
        )
        rows = self.store.query_arrow(sql, params.values).to_pylist()
        ip_vm = {r["client"]: int(r["cvm"]) for r in rows} | {r["server"]: int(r["svm"]) for r in rows}
        labels = ip_labels(self.names, ip_vm, self.window.mid_ns)
        out = []
        for r in rows:
            c2s, s2c = int(r["c2s"]), int(r["s2c"])
            fwd = c2s >= s2c
            out.append(Push(
                client=r["client"], client_name=labels[r["client"]], server=r["server"], server_name=labels[r["server"]],
                server_port=int(r["server_port"]), proto=proto_name(int(r["proto"])), direction="c2s" if fwd else "s2c",
                bytes_forward=max(c2s, s2c), bytes_back=min(c2s, s2c), ratio=round(float(oneway_ratio(c2s, s2c)), 2),
                from_ip=r["client"] if fwd else r["server"], to_ip=r["server"] if fwd else r["client"],
            ))  # fmt: skip
        return out

    def flows(self) -> tuple[list[Part], list[FailedHandshake], int, list[Talker]]:
        """Close types, failed handshakes and top talkers from the flow log."""
        src = table(self.db, "flow_log")
        n = int(self.request.limit)
        params = Params()
        where, side = self._base(params, flows=True)
        w = " AND ".join(where)
        closes = self.store.query_arrow(
            f"SELECT close_type, sum(o) AS bytes_out, sum(i) AS bytes_in, sum(p) AS packets, count() AS flows FROM ("
            f"SELECT argMax(close_type, record_seq) AS close_type, sum(if({side}, bytes_c2s, bytes_s2c)) AS o, "
            f"sum(if({side}, bytes_s2c, bytes_c2s)) AS i, sum(packets_c2s + packets_s2c) AS p FROM {src} WHERE {w} "
            f"GROUP BY agent_id, flow_id) GROUP BY close_type ORDER BY flows DESC, close_type", params.values,
        ).to_pylist()  # fmt: skip
        parts = [Part(key=r["close_type"], bytes=int(r["bytes_out"]) + int(r["bytes_in"]), bytes_out=int(r["bytes_out"]),
                      bytes_in=int(r["bytes_in"]), packets=int(r["packets"]), flows=int(r["flows"]),
                      failed=int(r["flows"]) if r["close_type"] in FAILED_CLOSE_TYPES else 0, share=0.0)
                 for r in closes]  # fmt: skip
        failed_types = ", ".join(f"'{t}'" for t in FAILED_CLOSE_TYPES)
        failed_rows = self.store.query_arrow(
            f"SELECT {ip_text('client_ip')} AS client, {ip_text('server_ip')} AS server, server_port, proto, close_type, "
            f"count() AS n, toInt64(toUnixTimestamp64Nano(min(first))) AS t0, toInt64(toUnixTimestamp64Nano(max(last))) AS t1, "
            f"sum(n) OVER () AS total FROM {src} WHERE {w} AND close_type IN ({failed_types}) "
            f"GROUP BY client_ip, server_ip, server_port, proto, close_type ORDER BY n DESC LIMIT {n}", params.values,
        ).to_pylist()  # fmt: skip
        failed = [FailedHandshake(client=r["client"], server=r["server"], server_port=int(r["server_port"]),
                                  proto=proto_name(int(r["proto"])), close_type=r["close_type"], count=int(r["n"]),
                                  first=_iso(r["t0"]), last=_iso(r["t1"])) for r in failed_rows]  # fmt: skip
        total = int(failed_rows[0]["total"]) if failed_rows else 0
        talkers = self.store.query_arrow(
            f"SELECT {ip_text('client_ip')} AS client, client_port, {ip_text('server_ip')} AS server, server_port, proto, "
            f"sum(bytes_c2s) AS c2s, sum(bytes_s2c) AS s2c, toInt64(toUnixTimestamp64Nano(min(first))) AS t0, "
            f"toInt64(toUnixTimestamp64Nano(max(last))) AS t1, argMax(close_type, record_seq) AS close "
            f"FROM {src} WHERE {w} GROUP BY agent_id, flow_id, client_ip, client_port, server_ip, server_port, proto "
            f"ORDER BY c2s + s2c DESC LIMIT {n}", params.values,
        ).to_pylist()  # fmt: skip
        top = [Talker(client=r["client"], client_port=int(r["client_port"]), server=r["server"],
                      server_port=int(r["server_port"]), proto=proto_name(int(r["proto"])), bytes_c2s=int(r["c2s"]),
                      bytes_s2c=int(r["s2c"]), first=_iso(r["t0"]), last=_iso(r["t1"]), close_type=r["close"])
               for r in talkers]  # fmt: skip
        return parts, failed, total, top


def _iso(ns: int) -> str:
    from cloudtap.server.query.timespec import iso

    return iso(int(ns))

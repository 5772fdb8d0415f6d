"""Compare a window with a baseline: the edges and endpoints that changed most, new and vanished edges.

For every edge (and endpoint) the metric is summed per ``step`` bucket in ClickHouse over both windows
(both widened to whole steps). Per key:

* ``abs_change`` = total in A - baseline total scaled to A's length (``expected``);
* ``rel_change`` = ``abs_change / expected`` (null when the baseline had nothing);
* ``z`` = robust z-score of A's mean bucket against the baseline's buckets, zeros included:
  ``(mean_A - median_B) / sigma_B``, sigma = 1.4826 MAD, else 1.2533 mean |x - median| (null when the
  baseline is flat, e.g. a new edge).

A baseline longer than :data:`MAX_BASELINE_BUCKETS` steps is bucketed by the smallest multiple of
``step`` that fits (the answer's ``step_s``), which bounds the work per key.

The ranked lists order by ``|abs_change|`` (``rank_by=abs``), ``|rel_change|`` or ``|z|`` (new and
vanished keys first for those two). The top ``bursts`` edges and endpoints also get their burst
intervals inside A (see :mod:`cloudtap.server.analyse.bursts`), measured against their baseline buckets.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from cloudtap.inventory.names import NameResolver, NoNames
from cloudtap.server.analyse._sql import (
    NS,
    Params,
    check_level,
    ip_text,
    parse_proto,
    proto_name,
    table,
    time_where,
)
from cloudtap.server.analyse.aggregate import Aggregate
from cloudtap.server.analyse.bursts import DEFAULT_K, Burst, find_bursts
from cloudtap.server.analyse.errors import AnalysisError
from cloudtap.server.analyse.labels import id_names, ip_labels, node_id
from cloudtap.server.analyse.metrics import METRIC_SQL, check_metric
from cloudtap.server.analyse.robust import MAD_SCALE, MEAN_AD_SCALE
from cloudtap.server.analyse.selector import Selector, edge_where
from cloudtap.server.analyse.series import fetch_series
from cloudtap.server.analyse.window import (
    Window,
    baseline_window,
    bucket_count,
    parse_step,
    pick_edge_table,
    resolve_window,
)
from cloudtap.server.store.ddl import ident

RankBy = Literal["abs", "rel", "z"]
#: Most baseline buckets per key: a longer baseline is read with a coarser step (a multiple of ``step``).
MAX_BASELINE_BUCKETS = 240


class CompareRequest(BaseModel):
    """Window A against a baseline."""

    model_config = ConfigDict(extra="forbid")

    time_from: str | int | float = Field(..., description="window A start")
    time_to: str | int | float | None = Field(None, description="window A end (default now)")
    baseline: str | None = Field(None, description="yesterday (default) | last_week | before")
    baseline_from: str | int | float | None = Field(None, description="explicit baseline start")
    baseline_to: str | int | float | None = Field(None, description="explicit baseline end (default: A's start)")
    level: str = Field("ip", description="ip | subnet | vm | host | project")
    by_port: bool = Field(True, description="edges split by server port and protocol")
    filter: Selector = Field(default_factory=Selector)
    metric: str = Field("bytes", description="bytes, bytes_c2s, bytes_s2c, packets, flows, failed, retrans")
    step: str = Field("1m", description="bucket of the baseline distribution")
    rank_by: RankBy = "abs"
    limit: int = Field(20, ge=1, le=1000)
    bursts: int = Field(3, ge=0, le=20, description="top edges/endpoints that get burst detection")
    burst_step: str | None = Field(None, description="bucket of burst detection (default step; 1s for fine)")
    burst_k: float = Field(DEFAULT_K, gt=0)
    burst_min_buckets: int = Field(1, ge=1, description="shortest burst kept, in buckets of burst_step")
    dedup: bool = True


class Change(BaseModel):
    """How one edge (or endpoint: no target) changed."""

    source: str
    source_name: str
    target: str | None = None
    target_name: str | None = None
    server_port: int | None = None
    proto: str | None = None
    status: Literal["new", "vanished", "changed"]
    value: float = Field(description="metric total in A")
    baseline_value: float = Field(description="metric total in the baseline")
    expected: float = Field(description="baseline total scaled to A's length")
    abs_change: float
    rel_change: float | None
    z: float | None
    baseline_median: float
    baseline_sigma: float | None
    bursts: list[Burst] | None = None


class CompareResult(BaseModel):
    """Ranked changes."""

    window: dict[str, str]
    baseline: dict[str, str]
    stored_table: str
    level: str
    metric: str
    step_s: int
    rank_by: str
    edges: list[Change]
    endpoints: list[Change]
    new_edges: list[Change]
    vanished_edges: list[Change]
    counts: dict[str, int]
    elapsed_ms: float


@dataclass
class _Key:
    expr: str  #: SQL value
    alias: str
    column: str | None  #: stored column to filter one key by (None: label only)
    kind: str  #: ip | int


def _edge_keys(level: str, by_port: bool) -> list[_Key]:
    if level == "ip":
        keys = [_Key(ip_text("client_ip"), "src", "client_ip", "ip"), _Key(ip_text("server_ip"), "dst", "server_ip", "ip")]
        keys += [_Key("client_vm_id", "src_vm", None, "int"), _Key("server_vm_id", "dst_vm", None, "int")]
    else:
        keys = [_Key(ident(f"client_{level}_id"), "src", f"client_{level}_id", "int"),
                _Key(ident(f"server_{level}_id"), "dst", f"server_{level}_id", "int")]  # fmt: skip
    if by_port:
        keys += [_Key("server_port", "server_port", "server_port", "int"), _Key("proto", "proto", "proto", "int")]
    return keys


def _endpoint_keys(level: str) -> list[_Key]:
    if level == "ip":
        return [
            _Key(f"if(_side = 0, {ip_text('client_ip')}, {ip_text('server_ip')})", "src", "ip", "ip"),
            _Key("if(_side = 0, client_vm_id, server_vm_id)", "src_vm", None, "int"),
        ]
    return [_Key(f"if(_side = 0, client_{level}_id, server_{level}_id)", "src", f"{level}_id", "int")]


def compare(store: Any, request: CompareRequest, names: NameResolver | None = None,
            now_ns: int | None = None) -> CompareResult:  # fmt: skip
    """Rank what changed between ``request``'s window and its baseline.

    Raises:
        AnalysisError: bad windows, step, level, metric or filter.
    """
    started = time.perf_counter()
    names = names or NoNames()
    level = check_level(request.level)
    metric = check_metric(request.metric, derived=False)
    step_s = parse_step(request.step)
    if step_s is None:
        raise AnalysisError("step is required (1s .. 1d)", "step")
    a = _align(resolve_window(request.time_from, request.time_to, now_ns), step_s)
    b = _align(baseline_window(a, request.baseline, request.baseline_from, request.baseline_to, now_ns), step_s)
    nb = bucket_count(b, step_s)
    if nb > MAX_BASELINE_BUCKETS:  # long baseline: coarser buckets keep the per-key distribution small
        step_s *= -(-nb // MAX_BASELINE_BUCKETS)
        a, b = _align(a, step_s), _align(b, step_s)
    na, nb = bucket_count(a, step_s), bucket_count(b, step_s)
    stored, _ = pick_edge_table(store, [a, b], step_s)
    source = table(store.database, stored)
    ctx = _Ctx(store, source, stored, a, b, na, nb, step_s, metric, request, names)
    edges = ctx.stats(_edge_keys(level, request.by_port), endpoint=False)
    points = ctx.stats(_endpoint_keys(level), endpoint=True)
    labels = ctx.labels(level, [edges, points])
    edge_changes = _Changes.of(edges, level, labels, na, nb, request.by_port)
    point_changes = _Changes.of(points, level, labels, na, nb, False)
    ranked = edge_changes.ranked(request.rank_by, request.limit)
    ranked_points = point_changes.ranked(request.rank_by, request.limit)
    burst_step = parse_step(request.burst_step, "burst_step") or step_s
    for change in ranked[: request.bursts]:
        change.bursts = ctx.bursts(change, level, burst_step, endpoint=False)
    for change in ranked_points[: request.bursts]:
        change.bursts = ctx.bursts(change, level, burst_step, endpoint=True)
    counts = {
        "edges": len(edge_changes), "endpoints": len(point_changes), "new_edges": edge_changes.count(1),
        "vanished_edges": edge_changes.count(2), "edges_in_window": int((edge_changes.value > 0).sum()),
        "edges_in_baseline": int((edge_changes.base > 0).sum()),
    }  # fmt: skip
    return CompareResult(
        window=a.to_json(), baseline=b.to_json(), stored_table=stored, level=level, metric=metric, step_s=step_s,
        rank_by=request.rank_by, edges=ranked, endpoints=ranked_points, new_edges=edge_changes.listed(1, request.limit),
        vanished_edges=edge_changes.listed(2, request.limit), counts=counts, elapsed_ms=round((time.perf_counter() - started) * 1000, 2),
    )  # fmt: skip


def _align(w: Window, step_s: int) -> Window:
    step = step_s * NS
    return Window(w.start_ns // step * step, -(-w.end_ns // step) * step)


@dataclass
class _Ctx:
    store: Any
    source: str
    stored: str
    a: Window
    b: Window
    na: int
    nb: int
    step_s: int
    metric: str
    request: CompareRequest
    names: NameResolver

    def _where(self, params: Params) -> list[str]:
        span = f"(({time_where(self.a.start_ns, self.a.end_ns, params)}) OR ({time_where(self.b.start_ns, self.b.end_ns, params)}))"
        return [span, *edge_where(self.request.filter, params, self.names, self.a.mid_ns)]

    def stats(self, keys: list[_Key], endpoint: bool) -> pa.Table:
        """Per key: totals in A and B, baseline median / MAD / mean abs deviation (zeros included)."""
        params = Params()
        source = self.source + (" ARRAY JOIN [0, 1] AS _side" if endpoint else "")
        agg = Aggregate(source, [(k.expr, k.alias) for k in keys], [(METRIC_SQL[self.metric], "v")],
                        self._where(params), self.step_s, self.request.dedup)  # fmt: skip
        a0, a1 = params.bind(self.a.start_ns // NS, "Int64"), params.bind(self.a.end_ns // NS, "Int64")
        b0, b1 = params.bind(self.b.start_ns // NS, "Int64"), params.bind(self.b.end_ns // NS, "Int64")
        nb = params.bind(self.nb, "Int64")
        in_a, in_b = f"bucket >= {a0} AND bucket < {a1}", f"bucket >= {b0} AND bucket < {b1}"
        aliases = ", ".join(k.alias for k in keys)
        sql = (
            f"SELECT {aliases}, a_total, b_total, arrayReduce('quantileExact', _b) AS b_median, "
            f"arrayMap(x -> abs(x - b_median), _b) AS _dev, arrayReduce('quantileExact', _dev) AS b_mad, "
            f"arrayAvg(_dev) AS b_meanad FROM ("
            f"SELECT {aliases}, sumIf(toFloat64(v), {in_a}) AS a_total, sumIf(toFloat64(v), {in_b}) AS b_total, "
            f"arrayConcat(groupArrayIf(toFloat64(v), {in_b}), "
            f"arrayWithConstant(toUInt64(greatest({nb} - countIf({in_b}), 0)), toFloat64(0))) AS _b "
            f"FROM ({agg.sql()}) GROUP BY {aliases})"
        )
        return self.store.query_arrow(sql, params.values)

    def labels(self, level: str, parts: list[pa.Table]) -> dict[Any, str]:
        """Key value -> display name."""
        if level == "ip":
            ip_vm: dict[str, int] = {}
            for t in parts:
                for side in ("src", "dst"):
                    if side in t.column_names:
                        for ip, vm in zip(t[side].to_pylist(), t[f"{side}_vm"].to_pylist(), strict=True):
                            ip_vm[ip] = max(ip_vm.get(ip, 0), int(vm))
            return dict(ip_labels(self.names, ip_vm, self.a.mid_ns))
        ids = [i for t in parts for side in ("src", "dst") if side in t.column_names for i in t[side].to_pylist()]
        return dict(id_names(self.names, level, ids, self.a.mid_ns))

    def bursts(self, change: Change, level: str, step_s: int, endpoint: bool) -> list[Burst]:
        """Burst intervals of one edge / endpoint in A, against its baseline buckets."""
        stored = self.stored
        if step_s != self.step_s:
            stored, _ = pick_edge_table(self.store, [self.a, self.b], step_s, "burst_step")

        def conds(params: Params) -> list[str]:
            def match(side: str, nid: str) -> str:
                if level == "ip":
                    return f"{side}_ip = {params.ip(nid, 'key')}"
                return f"{side}_{level}_id = {params.bind(int(nid.split(':', 1)[1]), 'UInt32')}"

            out = [f"({match('client', change.source)} OR {match('server', change.source)})" if endpoint
                   else match("client", change.source)]  # fmt: skip
            if not endpoint and change.target is not None:
                out.append(match("server", change.target))
            if change.server_port is not None:
                out.append(f"server_port = {params.bind(change.server_port, 'UInt16')}")
            if change.proto is not None:
                out.append(f"proto = {params.bind(parse_proto(change.proto), 'UInt8')}")
            return out + edge_where(self.request.filter, params, self.names, self.a.mid_ns)

        series = []
        for w in (self.a, self.b):
            params = Params()
            series.append(fetch_series(self.store, stored, w, step_s, conds(params), params, self.request.dedup))
        a, b = series
        found, _, _ = find_bursts(a.times_s, a.metric(self.metric), step_s, b.metric(self.metric), self.request.burst_k,
                                  min_buckets=self.request.burst_min_buckets, max_bursts=10)
        return found


@dataclass
class _Changes:
    """Per-key arrays of one stats table, ranked with numpy; :class:`Change` objects only for rows shown."""

    t: pa.Table
    level: str
    labels: dict[Any, str]
    by_port: bool
    value: np.ndarray
    base: np.ndarray
    expected: np.ndarray
    delta: np.ndarray
    rel: np.ndarray
    z: np.ndarray
    median: np.ndarray
    sigma: np.ndarray
    status: np.ndarray  #: 0 changed, 1 new, 2 vanished

    @classmethod
    def of(cls, t: pa.Table, level: str, labels: dict[Any, str], na: int, nb: int, by_port: bool) -> _Changes:
        def col(name: str) -> np.ndarray:
            return t[name].to_numpy(zero_copy_only=False).astype(np.float64) if t.num_rows else np.zeros(0)

        av, bv, med = col("a_total"), col("b_total"), col("b_median")
        mad, meanad = col("b_mad") * MAD_SCALE, col("b_meanad") * MEAN_AD_SCALE
        expected = bv * (na / nb)
        delta = av - expected
        sigma = np.where(mad > 0, mad, np.where(meanad > 0, meanad, np.nan))
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where(expected > 0, delta / np.where(expected > 0, expected, 1.0), np.nan)
            z = (av / na - med) / sigma
        status = np.where((bv == 0) & (av > 0), 1, np.where((av == 0) & (bv > 0), 2, 0))
        return cls(t, level, labels, by_port, av, bv, expected, delta, rel, z, med, sigma, status)

    def __len__(self) -> int:
        return len(self.value)

    def count(self, status: int) -> int:
        return int((self.status == status).sum())

    def ranked(self, rank_by: str, limit: int) -> list[Change]:
        """The ``limit`` biggest changes."""
        if rank_by == "abs":
            primary, secondary = np.abs(self.delta), self.value
        else:
            v = np.abs(self.rel if rank_by == "rel" else self.z)
            primary = np.where(np.isfinite(v), v, np.where(self.status > 0, np.inf, 0.0))
            secondary = np.abs(self.delta)
        order = np.lexsort((-secondary, -primary))[:limit]
        return [self.change(int(i)) for i in order]

    def listed(self, status: int, limit: int) -> list[Change]:
        """New (1) keys by value, or vanished (2) keys by baseline value."""
        idx = np.flatnonzero(self.status == status)
        size = self.value[idx] if status == 1 else self.base[idx]
        return [self.change(int(i)) for i in idx[np.argsort(-size, kind="stable")][:limit]]

    def change(self, i: int) -> Change:
        t, level = self.t, self.level
        src = t["src"][i].as_py()
        dst = t["dst"][i].as_py() if "dst" in t.column_names else None
        z, rel, sigma = self.z[i], self.rel[i], self.sigma[i]
        return Change(
            source=node_id(level, src), source_name=self.labels.get(src, str(src)),
            target=node_id(level, dst) if dst is not None else None,
            target_name=self.labels.get(dst, str(dst)) if dst is not None else None,
            server_port=int(t["server_port"][i].as_py()) if self.by_port else None,
            proto=proto_name(int(t["proto"][i].as_py())) if self.by_port else None,
            status=("changed", "new", "vanished")[int(self.status[i])], value=float(self.value[i]),
            baseline_value=float(self.base[i]), expected=float(self.expected[i]), abs_change=float(self.delta[i]),
            rel_change=float(rel) if np.isfinite(rel) else None, z=round(float(z), 3) if np.isfinite(z) else None,
            baseline_median=float(self.median[i]), baseline_sigma=float(sigma) if np.isfinite(sigma) else None,
        )  # fmt: skip

"""Compare a window with a baseline: the edges and endpoints that changed most, new and vanished edges.

For every edge (and endpoint) the metric is summed per ``step`` bucket in ClickHouse over both windows
(both widened to whole steps). An endpoint's bucket is the sum of its edges' (deduplicated) buckets.
Per key:

* ``abs_change`` = total in A - baseline total scaled to A's length (``expected``);
* ``rel_change`` = ``abs_change / expected`` (null when the baseline had nothing);
* ``z`` = robust z-score of A's mean bucket against the baseline's buckets, zeros included:
  ``(mean_A - median_B) / sigma_B``, sigma = 1.4826 MAD, else 1.2533 mean |x - median| (null when the
  baseline is flat, e.g. a new edge).

A is always read at ``step``. A baseline longer than :data:`MAX_BASELINE_BUCKETS` steps is read at a
coarser bucket over the whole buckets inside it: whole hours from ``edge_1h`` when it spans at least
:data:`HOURLY_BASELINE_S` (a multiple of 1 h when even hours are too many), else the smallest multiple
of ``step`` that fits. ``z`` then compares A's mean rate per baseline bucket. This bounds the rows read
and the work per key.

ClickHouse does the work in one query for edges and endpoints (see
:mod:`cloudtap.server.analyse.change_stats`): per key the totals and the baseline's exact median, MAD and
mean absolute deviation (``quantileExact`` over its at most 240 buckets); one row per key comes back.

The ranked lists order by ``|abs_change|`` (``rank_by=abs``), ``|rel_change|`` or ``|z|`` (new and
vanished keys first for those two). The top ``bursts`` edges and endpoints also get their burst
intervals inside A (see :mod:`cloudtap.server.analyse.bursts`) at ``burst_step`` (default ``step``),
measured against their baseline at that bucket (its last :data:`MAX_BURST_REFERENCE_S` at most).

A request metric (``latency_p99``...) compares the request rollups instead, edges per server port and
application protocol, endpoints being the servers; see :mod:`cloudtap.server.analyse.compare_requests`
for how latencies and rates (not sums) are compared: ``expected`` is then the baseline's value itself.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from cloudtap.inventory.names import NameResolver, NoNames
from cloudtap.server.analyse._sql import (
    NS,
    Params,
    check_level,
    parse_proto,
    proto_name,
)
from cloudtap.server.analyse.bursts import DEFAULT_K, Burst, find_bursts
from cloudtap.server.analyse.change_stats import Part, StatKey, query_stats
from cloudtap.server.analyse.compare_requests import request_stats
from cloudtap.server.analyse.errors import AnalysisError
from cloudtap.server.analyse.labels import id_names, ip_labels, node_id
from cloudtap.server.analyse.metrics import (
    METRIC_SQL,
    check_metric,
    family_of,
    is_additive,
    is_request_metric,
)
from cloudtap.server.analyse.robust import MAD_SCALE, MEAN_AD_SCALE
from cloudtap.server.analyse.selector import Selector, check_request_filter, edge_where
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
#: A long baseline spanning at least this is bucketed by whole hours (read from ``edge_1h``).
HOURLY_BASELINE_S = 12 * 3600
#: Bursts are measured against (at most) this much of the baseline, the part nearest A: bounded reads.
MAX_BURST_REFERENCE_S = 86400


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
    metric: str = Field("bytes", description="bytes, bytes_c2s, bytes_s2c, packets, flows, failed, retrans; or "
                        "requests, errors, error_rate, latency_avg, latency_p50/p90/p99, latency_max (ms)")
    step: str = Field("1m", description="bucket of A and of the baseline distribution (coarser for a long baseline)")
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
    l7_proto: str | None = Field(None, description="request metrics: http, dns, mysql, pgsql, redis")
    status: Literal["new", "vanished", "changed"]
    value: float = Field(description="metric total in A (latencies, error rate: over all of A's requests)")
    baseline_value: float = Field(description="metric total in the baseline")
    expected: float = Field(description="baseline total scaled to A's length (latencies, error rate: the baseline's)")
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
    baseline_table: str = Field("", description="edge table the baseline was read from")
    window_step_s: int = Field(0, description="bucket A is read at (step_s: the baseline's buckets)")
    edges: list[Change]
    endpoints: list[Change]
    new_edges: list[Change]
    vanished_edges: list[Change]
    counts: dict[str, int]
    elapsed_ms: float


def _keys(level: str, by_port: bool) -> list[StatKey]:
    """Edge key columns; the ``side`` 0 / 1 ones also make the endpoint key."""
    if level == "ip":
        keys = [StatKey("client_ip", "src", "ip", 0), StatKey("server_ip", "dst", "ip", 1),
                StatKey("client_vm_id", "src_vm", "int", 0), StatKey("server_vm_id", "dst_vm", "int", 1)]  # fmt: skip
    else:
        keys = [StatKey(ident(f"client_{level}_id"), "src", "int", 0), StatKey(ident(f"server_{level}_id"), "dst", "int", 1)]
    if by_port:
        keys += [StatKey("server_port", "server_port", "int"), StatKey("proto", "proto", "int")]
    return keys


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
    family = family_of(metric)
    if family == "request":
        check_request_filter(request.filter, "filter")
    step_s = parse_step(request.step)
    if step_s is None:
        raise AnalysisError("step is required (1s .. 1d)", "step")
    a = _align(resolve_window(request.time_from, request.time_to, now_ns), step_s)
    b = _align(baseline_window(a, request.baseline, request.baseline_from, request.baseline_to, now_ns), step_s)
    b_step = _baseline_step(b, step_s)
    if b_step == step_s:
        stored, _ = pick_edge_table(store, [a, b], step_s, family=family)
        b_stored = stored
    else:  # long baseline: coarser buckets inside it keep the rows read and the per-key distribution small
        b = _inside(b, b_step)
        stored, _ = pick_edge_table(store, [a], step_s, family=family)
        b_stored, _ = pick_edge_table(store, [b], b_step, family=family)
    na, nb = bucket_count(a, step_s), bucket_count(b, b_step)
    ctx = _Ctx(store, stored, b_stored, a, b, na, nb, step_s, b_step, metric, request, names)
    edges, points = ctx.stats(_keys(level, request.by_port))
    labels = ctx.labels(level, [edges, points])
    spans = (na * step_s, nb * b_step, b_step)
    edge_changes = _Changes.of(edges, level, labels, *spans, request.by_port, is_additive(metric))
    point_changes = _Changes.of(points, level, labels, *spans, False, is_additive(metric))
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
        window=a.to_json(), baseline=b.to_json(), stored_table=stored, level=level, metric=metric, step_s=b_step,
        rank_by=request.rank_by, baseline_table=b_stored, window_step_s=step_s, edges=ranked, endpoints=ranked_points, new_edges=edge_changes.listed(1, request.limit),
        vanished_edges=edge_changes.listed(2, request.limit), counts=counts, elapsed_ms=round((time.perf_counter() - started) * 1000, 2),
    )  # fmt: skip


def _align(w: Window, step_s: int) -> Window:
    step = step_s * NS
    return Window(w.start_ns // step * step, -(-w.end_ns // step) * step)


def _inside(w: Window, step_s: int) -> Window:
    """The whole ``step_s`` buckets inside ``w`` (``w`` aligned outwards if none fits)."""
    step = step_s * NS
    inner = Window(-(-w.start_ns // step) * step, w.end_ns // step * step)
    return inner if inner.end_ns > inner.start_ns else _align(w, step_s)


def _baseline_step(b: Window, step_s: int) -> int:
    """Bucket of the baseline: ``step``, or a coarser one when it would have too many buckets."""
    nb = bucket_count(b, step_s)
    if nb <= MAX_BASELINE_BUCKETS:
        return step_s
    if b.span_ns >= HOURLY_BASELINE_S * NS:
        hour = step_s * 3600 // math.gcd(step_s, 3600)  # the smallest multiple of both
        return hour * -(-b.span_ns // (hour * NS * MAX_BASELINE_BUCKETS))
    return step_s * -(-nb // MAX_BASELINE_BUCKETS)


@dataclass
class _Ctx:
    store: Any
    stored: str  #: edge table of A
    b_stored: str  #: edge table of the baseline
    a: Window
    b: Window
    na: int
    nb: int
    step_s: int  #: A's bucket
    b_step: int  #: the baseline's bucket
    metric: str
    request: CompareRequest
    names: NameResolver
    burst_tables: dict[int, str] = field(default_factory=dict)  #: burst step -> edge table

    def stats(self, keys: list[StatKey]) -> tuple[pa.Table, pa.Table]:
        """(edges, endpoints): totals in A and B, baseline median / MAD / mean abs deviation (zeros included)."""
        a = Part(self.stored, self.a.start_ns, self.a.end_ns, self.step_s)
        b = Part(self.b_stored, self.b.start_ns, self.b.end_ns, self.b_step)
        if is_request_metric(self.metric):
            level, by_port = self.request.level, self.request.by_port

            def where_of(params: Params) -> list[str]:
                return edge_where(self.request.filter, params, self.names, self.a.mid_ns)

            return tuple(request_stats(self.store, level, by_port, point, self.metric, a, b, self.nb, where_of,
                                       self.request.dedup) for point in (False, True))  # fmt: skip
        params = Params()
        where = edge_where(self.request.filter, params, self.names, self.a.mid_ns)
        return query_stats(self.store, keys, METRIC_SQL[self.metric], a, b, self.nb, where, params, self.request.dedup)

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
        stored, family = self.stored, family_of(self.metric)
        if step_s != self.step_s or self.b_stored != self.stored:
            if step_s not in self.burst_tables:
                self.burst_tables[step_s] = pick_edge_table(self.store, [self.a, self.b], step_s, "burst_step", family)[0]
            stored = self.burst_tables[step_s]
        served = family == "request"  # a request endpoint is a server

        def conds(params: Params) -> tuple[tuple[str, str] | None, list[str]]:
            def match(side: str, nid: str) -> str:
                if level == "ip":
                    return f"{side}_ip = {params.ip(nid, 'key')}"
                return f"{side}_{level}_id = {params.bind(int(nid.split(':', 1)[1]), 'UInt32')}"

            # an endpoint is either side: two index-friendly scans (see fetch_series), not one OR
            either = (match("client", change.source), match("server", change.source)) if endpoint and not served else None
            out = [match("server", change.source)] if endpoint and served else [] if endpoint else [match("client", change.source)]
            if not endpoint and change.target is not None:
                out.append(match("server", change.target))
            if change.server_port is not None:
                out.append(f"server_port = {params.bind(change.server_port, 'UInt16')}")
            if change.proto is not None:
                out.append(f"proto = {params.bind(parse_proto(change.proto), 'UInt8')}")
            if change.l7_proto is not None:
                out.append(f"l7_proto = {params.bind(change.l7_proto, 'String')}")
            return either, out + edge_where(self.request.filter, params, self.names, self.a.mid_ns)

        series = []
        reference = Window(max(self.b.start_ns, self.b.end_ns - MAX_BURST_REFERENCE_S * NS), self.b.end_ns)
        for w in (self.a, reference):
            params = Params()
            either, where = conds(params)
            series.append(fetch_series(self.store, stored, w, step_s, where, params, self.request.dedup, either))
        a, b = series
        reference = b.metric(self.metric)[b.valid(self.metric)]  # latencies: the buckets that have one
        found, _, _ = find_bursts(a.times_s, a.metric(self.metric), step_s, reference, self.request.burst_k,
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
    def of(cls, t: pa.Table, level: str, labels: dict[Any, str], a_span_s: int, b_span_s: int, b_step_s: int,
           by_port: bool, additive: bool = True) -> _Changes:  # fmt: skip
        """Changes of one stats table (A spans ``a_span_s``; the baseline ``b_span_s`` in ``b_step_s`` buckets;
        not ``additive``: A's and B's values are levels, a latency, compared as they are)."""

        def col(name: str) -> np.ndarray:
            return t[name].to_numpy(zero_copy_only=False).astype(np.float64) if t.num_rows else np.zeros(0)

        av, bv, med = col("a_total"), col("b_total"), col("b_median")
        mad, meanad = col("b_mad") * MAD_SCALE, col("b_meanad") * MEAN_AD_SCALE
        expected = bv * (a_span_s / b_span_s) if additive else bv
        delta = av - expected
        sigma = np.where(mad > 0, mad, np.where(meanad > 0, meanad, np.nan))
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where(expected > 0, delta / np.where(expected > 0, expected, 1.0), np.nan)
            z = ((av * (b_step_s / a_span_s) if additive else av) - med) / sigma  # A's mean rate per baseline bucket
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
            proto=proto_name(int(t["proto"][i].as_py())) if self.by_port and "proto" in t.column_names else None,
            l7_proto=str(t["l7_proto"][i].as_py()) if self.by_port and "l7_proto" in t.column_names else None,
            status=("changed", "new", "vanished")[int(self.status[i])], value=float(self.value[i]),
            baseline_value=float(self.base[i]), expected=float(self.expected[i]), abs_change=float(self.delta[i]),
            rel_change=float(rel) if np.isfinite(rel) else None, z=round(float(z), 3) if np.isfinite(z) else None,
            baseline_median=float(self.median[i]), baseline_sigma=float(sigma) if np.isfinite(sigma) else None,
        )  # fmt: skip

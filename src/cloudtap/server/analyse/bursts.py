"""Burst detection on a time series (1 s or 1 min buckets) with median / MAD.

A bucket is bursting when its robust z-score ``(x - median) / sigma`` against a reference distribution
(a baseline's buckets, else the series itself) exceeds ``k`` and its value is at least ``min_value``;
consecutive bursting buckets (gaps up to ``max_gap`` allowed) form one burst interval.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from cloudtap.inventory.names import NameResolver, NoNames
from cloudtap.server.analyse.errors import AnalysisError
from cloudtap.server.analyse.metrics import check_metric, family_of
from cloudtap.server.analyse.robust import robust_center_scale, robust_z, runs
from cloudtap.server.analyse.selector import Selector
from cloudtap.server.analyse.series import selector_series
from cloudtap.server.analyse.window import baseline_window, parse_step, pick_edge_table, resolve_window
from cloudtap.server.query.timespec import iso

#: Default z-score threshold.
DEFAULT_K = 3.5
#: Most bursts one series reports.
MAX_BURSTS = 50


class Burst(BaseModel):
    """One burst: ``[start, end)``."""

    start: str
    end: str
    buckets: int
    total: float = Field(description="metric summed over the burst")
    peak: float = Field(description="largest bucket")
    peak_z: float = Field(description="robust z-score of the largest bucket")


def find_bursts(times_s: np.ndarray, values: np.ndarray, step_s: int, reference: np.ndarray | None = None,
                k: float = DEFAULT_K, min_value: float = 0.0, max_gap: int = 0, min_buckets: int = 1,
                max_bursts: int = MAX_BURSTS) -> tuple[list[Burst], float, float]:  # fmt: skip
    """Bursts of a dense series.

    Args:
        times_s: bucket starts (epoch s).
        values: metric per bucket (zeros included).
        step_s: bucket width.
        reference: the normal distribution (e.g. baseline buckets); default ``values``.
        k: z-score threshold.
        min_value: smallest bucket value that can burst.
        max_gap: quiet buckets tolerated inside one burst.
        min_buckets: shortest burst kept (in bursting buckets).
        max_bursts: most bursts returned (the biggest by total, in time order).

    Returns:
        (bursts, median, sigma) of the reference.
    """
    v = np.asarray(values, np.float64)
    ref = v if reference is None or not len(reference) else np.asarray(reference, np.float64)
    center, scale = robust_center_scale(ref, fallback=np.concatenate([ref, v]))
    z = robust_z(v, center, scale)
    flags = (z > k) & (v >= min_value) & (v > center)
    spans = runs(flags, max_gap)
    if len(spans):
        counts = np.add.reduceat(flags.astype(np.int64), spans[:, 0])
        spans = spans[counts[: len(spans)] >= min_buckets] if min_buckets > 1 else spans
    if len(spans) > max_bursts:
        cum = np.concatenate(([0.0], np.cumsum(v)))
        totals = cum[spans[:, 1] + 1] - cum[spans[:, 0]]
        spans = spans[np.sort(np.argsort(-totals, kind="stable")[:max_bursts])]
    out = []
    for a, b in spans:
        seg = v[a : b + 1]
        peak = int(np.argmax(seg))
        out.append(Burst(
            start=iso(int(times_s[a]) * 1_000_000_000), end=iso((int(times_s[b]) + step_s) * 1_000_000_000),
            buckets=int(b - a + 1), total=float(seg[flags[a : b + 1]].sum()), peak=float(seg[peak]),
            peak_z=round(float(z[a + peak]), 2),
        ))  # fmt: skip
    return out, center, scale


class BurstRequest(BaseModel):
    """Find bursts of selected traffic in a window."""

    model_config = ConfigDict(extra="forbid")

    time_from: str | int | float
    time_to: str | int | float | None = None
    filter: Selector = Field(default_factory=Selector)
    metric: str = Field("bytes", description="bytes, packets, flows, failed, retrans, bytes_c2s, oneway...")
    step: str = Field("1m", description="bucket: 1s, 1m, ...")
    k: float = Field(DEFAULT_K, gt=0, description="robust z-score threshold")
    min_value: float = Field(0.0, ge=0, description="smallest bucket value that can burst")
    max_gap: int = Field(0, ge=0, le=1000, description="quiet buckets tolerated inside a burst")
    min_buckets: int = Field(1, ge=1, le=100_000, description="shortest burst, in buckets")
    baseline: str | None = Field(None, description="reference: yesterday | last_week | before (default the window)")
    baseline_from: str | int | float | None = None
    baseline_to: str | int | float | None = None
    dedup: bool = True


class BurstResult(BaseModel):
    """Bursts and the reference they were measured against."""

    window: dict[str, str]
    baseline: dict[str, str] | None
    stored_table: str
    step_s: int
    metric: str
    median: float
    sigma: float
    buckets: int
    total: float
    bursts: list[Burst]
    elapsed_ms: float


def detect_bursts(store: Any, request: BurstRequest, names: NameResolver | None = None,
                  now_ns: int | None = None) -> BurstResult:  # fmt: skip
    """Bursts of ``request.filter``'s traffic.

    Raises:
        AnalysisError: bad window, step, metric or filter.
    """
    started = time.perf_counter()
    names = names or NoNames()
    metric = check_metric(request.metric)
    window = resolve_window(request.time_from, request.time_to, now_ns)
    step_s = parse_step(request.step)
    if step_s is None:
        raise AnalysisError("step is required (1s .. 1d)", "step")
    base = None
    if request.baseline is not None or request.baseline_from is not None:
        base = baseline_window(window, request.baseline, request.baseline_from, request.baseline_to, now_ns)
    stored, _ = pick_edge_table(store, [window] + ([base] if base else []), step_s, family=family_of(metric))
    s = selector_series(store, stored, window, step_s, request.filter, names, request.dedup)
    values = s.metric(metric)
    reference = None
    if base is not None:
        ref = selector_series(store, stored, base, step_s, request.filter, names, request.dedup)
        reference = ref.metric(metric)[ref.valid(metric)]  # latencies: the buckets that have one
    bursts, center, scale = find_bursts(s.times_s, values, step_s, reference, request.k, request.min_value,
                                        request.max_gap, request.min_buckets)  # fmt: skip
    return BurstResult(
        window=window.to_json(), baseline=base.to_json() if base else None, stored_table=stored, step_s=step_s,
        metric=metric, median=center, sigma=scale, buckets=s.n, total=float(values.sum()), bursts=bursts,
        elapsed_ms=round((time.perf_counter() - started) * 1000, 2),
    )  # fmt: skip

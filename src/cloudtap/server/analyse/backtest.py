"""Backtest a signature over the stored history: occurrences, their count and their periodicity.

The signature's traffic is aggregated per ``step`` bucket in ClickHouse over the whole range of the
edge rollup that serves the step (``edge_1m`` for 1 min, ``edge_1h`` for hours, ``edge_1s`` below a
minute), or over ``time_from``/``time_to`` when given. The condition is then tested on the zero-filled
bucket series with numpy (z-scores against the median / MAD of the whole scanned series), and runs of
matching buckets become occurrences.

A request metric (``latency_p99>200``: ms per bucket, ``error_rate>0.05``, ``requests>1000``) reads the
request rollups instead. Rates and latencies have no value in a bucket without (answered) requests: such a
bucket never matches, and the z-score's median / MAD are taken over the buckets that have one.
"""

from __future__ import annotations

import operator
import time
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from cloudtap.inventory.names import NameResolver, NoNames
from cloudtap.server.analyse.errors import AnalysisError
from cloudtap.server.analyse.metrics import family_of
from cloudtap.server.analyse.periodicity import Period, find_period
from cloudtap.server.analyse.robust import robust_center_scale, robust_z, runs
from cloudtap.server.analyse.series import selector_series
from cloudtap.server.analyse.signature import Signature
from cloudtap.server.analyse.window import (
    ROLLUPS,
    Window,
    data_bounds,
    parse_step,
    resolve_window,
    rollup_span_s,
)
from cloudtap.server.query.timespec import iso

_COMPARE = {"gt": operator.gt, "ge": operator.ge, "lt": operator.lt, "le": operator.le}


class BacktestRequest(BaseModel):
    """A signature (inline, or ``name`` of a saved one) and an optional range (default: all history)."""

    model_config = ConfigDict(extra="forbid")

    signature: Signature | None = None
    name: str | None = Field(None, description="a saved signature")
    time_from: str | int | float | None = Field(None, description="default: the first stored row")
    time_to: str | int | float | None = Field(None, description="default: the last stored row")
    limit: int = Field(1000, ge=1, le=100_000, description="occurrences listed (the count covers all)")
    dedup: bool = True


class Occurrence(BaseModel):
    """One run of matching buckets: ``[start, end)``."""

    start: str
    end: str
    buckets: int
    total: float = Field(description="metric summed over the occurrence's buckets")
    peak: float


class BacktestResult(BaseModel):
    """Where and how often the signature matched."""

    signature: Signature
    describe: str
    scanned: dict[str, str] | None
    stored_table: str
    step_s: int
    buckets: int
    matching_buckets: int
    count: int
    occurrences: list[Occurrence]
    period: Period | None
    median: float
    sigma: float
    elapsed_ms: float


def backtest_table(step_s: int, family: str = "edge") -> str:
    """The rollup a backtest at ``step_s`` reads: the coarsest (edge or request) one whose interval divides the step."""
    return next(name for name, width, _ in reversed(ROLLUPS[family]) if step_s % width == 0)


def backtest(store: Any, signature: Signature, time_from: Any = None, time_to: Any = None,
             names: NameResolver | None = None, limit: int = 1000, dedup: bool = True,
             now_ns: int | None = None) -> BacktestResult:  # fmt: skip
    """Scan history for ``signature``.

    Raises:
        AnalysisError: bad step, range, filter or name.
    """
    started = time.perf_counter()
    names = names or NoNames()
    step_s = parse_step(signature.step)
    if step_s is None:
        raise AnalysisError("step is required (1s .. 1d)", "step")
    cond = signature.condition
    stored = backtest_table(step_s, family_of(cond.metric))
    bounds = data_bounds(store, stored)
    if bounds is None:
        return BacktestResult(signature=signature, describe=signature.describe(), scanned=None, stored_table=stored,
                              step_s=step_s, buckets=0, matching_buckets=0, count=0, occurrences=[], period=None,
                              median=0.0, sigma=0.0, elapsed_ms=round((time.perf_counter() - started) * 1000, 2))  # fmt: skip
    window = _range(bounds, time_from, time_to, now_ns)
    _, max_span = rollup_span_s(stored)
    if window.span_ns > max_span * 1_000_000_000:
        raise AnalysisError(f"{stored} answers at most {max_span // 86400} days; narrow time_from/time_to", "time_from")
    series = selector_series(store, stored, window, step_s, signature.filter, names, dedup)
    values = series.metric(cond.metric)
    valid = series.valid(cond.metric)
    center, scale = robust_center_scale(values[valid])
    tested = robust_z(values, center, scale) if cond.test == "zscore" else values
    flags = _COMPARE[cond.op](tested, cond.threshold) & valid
    if cond.op in ("gt", "ge"):
        flags &= values > 0  # an idle bucket never matches an "above" condition
    spans = runs(flags, signature.max_gap)
    if len(spans) and signature.min_buckets > 1:
        counts = np.add.reduceat(flags.astype(np.int64), spans[:, 0])
        spans = spans[counts >= signature.min_buckets]
    times = series.times_s
    starts = times[spans[:, 0]] if len(spans) else np.zeros(0, np.int64)
    cum = np.concatenate(([0.0], np.cumsum(np.where(flags, values, 0.0))))
    occurrences = [
        Occurrence(start=iso(int(times[a]) * 1_000_000_000), end=iso((int(times[b]) + step_s) * 1_000_000_000),
                   buckets=int(b - a + 1), total=float(cum[b + 1] - cum[a]), peak=float(values[a : b + 1].max()))
        for a, b in spans[:limit]
    ]  # fmt: skip
    return BacktestResult(
        signature=signature, describe=signature.describe(), scanned=window.to_json(), stored_table=stored,
        step_s=step_s, buckets=series.n, matching_buckets=int(flags.sum()), count=int(len(spans)),
        occurrences=occurrences, period=find_period(starts, step_s), median=center, sigma=scale,
        elapsed_ms=round((time.perf_counter() - started) * 1000, 2),
    )  # fmt: skip


def _range(bounds: Window, time_from: Any, time_to: Any, now_ns: int | None) -> Window:
    if time_from is None and time_to is None:
        return bounds
    start = bounds.start_ns if time_from is None else resolve_window(time_from, None if time_to is None else time_to,
                                                                     now_ns).start_ns  # fmt: skip
    end = bounds.end_ns if time_to is None else resolve_window(start, time_to, now_ns).end_ns
    start, end = max(start, bounds.start_ns), min(end, bounds.end_ns)
    if end <= start:
        raise AnalysisError("no stored data in the range", "time_from")
    return Window(start, end)

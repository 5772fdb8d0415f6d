"""Per-bucket metrics the analyses compare, detect bursts on and test signatures against.

Two families. *Edge* metrics are SQL over edge-table sums plus their numpy counterpart over the fetched
sums, so a series is aggregated in ClickHouse and derived metrics (``oneway``) are computed vectorised.
*Request* metrics read the request rollups (``request_1s/1m/1h``): counts summed, latency percentiles
merged from the rollups' t-digests (``quantilesTDigestMerge(0.5, 0.9, 0.99)``); latencies are in ms.
``requests`` and ``errors`` add up over time (like bytes); the rates and latencies do not: a bucket
without requests (or without answered ones, for latencies) has no value, see :func:`metric_valid`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from cloudtap.server.analyse.errors import AnalysisError

#: metric -> SQL over the edge columns (summed per group and bucket).
METRIC_SQL = {
    "bytes": "bytes_c2s + bytes_s2c",
    "bytes_c2s": "bytes_c2s",
    "bytes_s2c": "bytes_s2c",
    "packets": "packets_c2s + packets_s2c",
    "flows": "flows_opened",
    "failed": "flows_failed",
    "retrans": "retrans",
}
#: Metrics computed from others after aggregation.
DERIVED = ("oneway",)
#: Edge columns fetched for a series.
SERIES_COLUMNS = (
    "bytes_c2s",
    "bytes_s2c",
    "packets_c2s",
    "packets_s2c",
    "flows_opened",
    "flows_failed",
    "retrans",
)

#: Columns of one aggregated request group (see :mod:`cloudtap.server.analyse.request_aggregate`).
REQUEST_COLUMNS = (
    "requests", "client_errors", "server_errors", "timeouts", "errors", "answered", "latency_sum_us",
    "latency_max_us", "latency_p50_us", "latency_p90_us", "latency_p99_us",
)  # fmt: skip
#: request metric -> SQL over the :data:`REQUEST_COLUMNS` of an aggregated group (latencies in ms).
REQUEST_METRIC_SQL = {
    "requests": "requests",
    "errors": "errors",
    "error_rate": "if(requests > 0, errors / requests, 0)",
    "latency_avg": "if(answered > 0, latency_sum_us / answered / 1000, 0)",
    "latency_p50": "latency_p50_us / 1000",
    "latency_p90": "latency_p90_us / 1000",
    "latency_p99": "latency_p99_us / 1000",
    "latency_max": "latency_max_us / 1000",
}
#: Request metrics that add up over buckets and keys (the others are rates and latencies).
ADDITIVE_REQUEST_METRICS = ("requests", "errors")
#: Request metric names.
REQUEST_METRICS = tuple(REQUEST_METRIC_SQL)
#: Edge metric names.
EDGE_METRICS = tuple(METRIC_SQL) + DERIVED
#: Every metric name.
METRICS = EDGE_METRICS + REQUEST_METRICS


def check_metric(name: str, field: str = "metric", derived: bool = True, requests: bool = True) -> str:
    """``name`` if it is a metric (derived ones only when ``derived``, request ones when ``requests``).

    Raises:
        AnalysisError: naming ``field`` and listing the allowed metrics.
    """
    allowed = (EDGE_METRICS if derived else tuple(METRIC_SQL)) + (REQUEST_METRICS if requests else ())
    if name not in allowed:
        raise AnalysisError(f"unknown metric {name!r}", field, allowed)
    return name


def is_request_metric(name: str) -> bool:
    """True for a metric read from the request rollups."""
    return name in REQUEST_METRIC_SQL


def family_of(name: str) -> str:
    """``request`` for a request metric, else ``edge``: which rollups answer it."""
    return "request" if is_request_metric(name) else "edge"


def is_additive(name: str) -> bool:
    """True when the metric of a window is the sum of its buckets' (bytes, requests...)."""
    return not is_request_metric(name) or name in ADDITIVE_REQUEST_METRICS


def oneway_ratio(fwd: np.ndarray, rev: np.ndarray) -> np.ndarray:
    """One-way ratio: bytes of the bigger direction over bytes of the smaller one (+1 byte, never /0)."""
    a, b = np.asarray(fwd, np.float64), np.asarray(rev, np.float64)
    return np.maximum(a, b) / (np.minimum(a, b) + 1.0)


def _ratio(num: np.ndarray, den: np.ndarray, scale: float = 1.0) -> np.ndarray:
    n, d = np.asarray(num, np.float64), np.asarray(den, np.float64)
    return np.where(d > 0, n / np.where(d > 0, d, 1.0) / scale, 0.0)


def request_metric_values(name: str, cols: dict[str, np.ndarray]) -> np.ndarray:
    """A request metric per bucket (or per group) from :data:`REQUEST_COLUMNS` arrays; 0 where it has no value."""
    table: dict[str, Callable[[], np.ndarray]] = {
        "requests": lambda: cols["requests"],
        "errors": lambda: cols["errors"],
        "error_rate": lambda: _ratio(cols["errors"], cols["requests"]),
        "latency_avg": lambda: _ratio(cols["latency_sum_us"], cols["answered"], 1000.0),
        "latency_p50": lambda: np.asarray(cols["latency_p50_us"], np.float64) / 1000.0,
        "latency_p90": lambda: np.asarray(cols["latency_p90_us"], np.float64) / 1000.0,
        "latency_p99": lambda: np.asarray(cols["latency_p99_us"], np.float64) / 1000.0,
        "latency_max": lambda: np.asarray(cols["latency_max_us"], np.float64) / 1000.0,
    }
    return np.asarray(table[name](), np.float64)


def metric_values(name: str, sums: dict[str, np.ndarray]) -> np.ndarray:
    """The metric per bucket from the :data:`SERIES_COLUMNS` sums (or :data:`REQUEST_COLUMNS`)."""
    if is_request_metric(name):
        return request_metric_values(name, sums)
    c2s, s2c = sums["bytes_c2s"], sums["bytes_s2c"]
    table: dict[str, Callable[[], np.ndarray]] = {
        "bytes": lambda: c2s + s2c,
        "bytes_c2s": lambda: c2s,
        "bytes_s2c": lambda: s2c,
        "packets": lambda: sums["packets_c2s"] + sums["packets_s2c"],
        "flows": lambda: sums["flows_opened"],
        "failed": lambda: sums["flows_failed"],
        "retrans": lambda: sums["retrans"],
        "oneway": lambda: np.where(c2s + s2c > 0, oneway_ratio(c2s, s2c), 0.0),
    }
    return np.asarray(table[check_metric(name)](), np.float64)


def metric_valid(name: str, sums: dict[str, np.ndarray]) -> np.ndarray:
    """Buckets where the metric has a value: all for additive ones, those with requests (error_rate) or
    with answered requests (latencies) for the others."""
    n = len(next(iter(sums.values())))
    if is_additive(name):
        return np.ones(n, bool)
    basis = sums["requests"] if name == "error_rate" else sums["answered"]
    return np.asarray(basis) > 0

"""Per-bucket metrics the analyses compare, detect bursts on and test signatures against.

Each metric is a SQL expression over edge-table sums plus its numpy counterpart over the fetched sums,
so a series is aggregated in ClickHouse and derived metrics (``oneway``) are computed vectorised.
"""

from __future__ import annotations

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
#: Every metric name.
METRICS = tuple(METRIC_SQL) + DERIVED
#: Edge columns fetched for a series.
SERIES_COLUMNS = ("bytes_c2s", "bytes_s2c", "packets_c2s", "packets_s2c", "flows_opened", "flows_failed", "retrans")


def check_metric(name: str, field: str = "metric", derived: bool = True) -> str:
    """``name`` if it is a metric (derived ones only when ``derived``)."""
    allowed = METRICS if derived else tuple(METRIC_SQL)
    if name not in allowed:
        raise AnalysisError(f"unknown metric {name!r}", field, allowed)
    return name


def oneway_ratio(fwd: np.ndarray, rev: np.ndarray) -> np.ndarray:
    """One-way ratio: bytes of the bigger direction over bytes of the smaller one (+1 byte, never /0)."""
    a, b = np.asarray(fwd, np.float64), np.asarray(rev, np.float64)
    return np.maximum(a, b) / (np.minimum(a, b) + 1.0)


def metric_values(name: str, sums: dict[str, np.ndarray]) -> np.ndarray:
    """The metric per bucket from the :data:`SERIES_COLUMNS` sums."""
    c2s, s2c = sums["bytes_c2s"], sums["bytes_s2c"]
    table = {
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

"""Metrics of application requests: over the ``request_1s/1m/1h`` rollups (``requests``) and over
``request_log`` records. Names as in docs/requests.md ("Stored"): ``requests``, ``errors``, ``error_rate``,
``latency_avg``, ``latency_p50/p90/p99`` and ``latency_max`` (ms); ``latency`` takes mean, max and the
digest's quantiles on the rollups (``latency_p99`` is ``latency`` with ``p99``), any percentile on records.
"""

from __future__ import annotations

from cloudtap.server.query.metric import Metric
from cloudtap.server.store.request_columns import LATENCY_QUANTILES, QUANTILES_SQL

#: Requests that did not succeed: client and server errors, timeouts and unanswered ones.
_ERRORS_ROLLUP = "(client_errors + server_errors + timeouts)"
_LATENCY_DOC = "latency of the answered requests (request to first response segment), ms"
_QUANTILE_NAMES = tuple(f"p{round(q * 100)}" for q in LATENCY_QUANTILES)


def _rollup_latency() -> dict[str, str]:
    """Aggregation -> SQL of the latency over request rollups (ms; NULL where nothing was answered)."""
    merged = f"quantilesTDigestMerge({QUANTILES_SQL})(latency_digest)"
    out = {"mean": "sum(latency_sum_us) / 1000 / nullIf(sum(answered), 0)",
           "max": "maxIfOrNull(latency_max_us, answered > 0) / 1000"}  # fmt: skip
    for i, p in enumerate(_QUANTILE_NAMES, start=1):
        out[p] = f"if(sum(answered) > 0, arrayElement({merged}, {i}) / 1000, NULL)"
    return out


def _record_latency() -> dict[str, str]:
    """The same over request records (``latency`` there takes any percentile too)."""
    ms, ok = "latency_us / 1000", "latency_us >= 0"
    out = {"mean": f"avgIfOrNull({ms}, {ok})", "max": f"maxIfOrNull({ms}, {ok})"}
    for q, p in zip(LATENCY_QUANTILES, _QUANTILE_NAMES, strict=True):
        out[p] = f"quantileTDigestIfOrNull({q})({ms}, {ok})"
    return out


def _latency_metrics(columns: tuple[str, ...], sql: dict[str, str]) -> list[Metric]:
    """``latency_avg``, ``latency_max``, ``latency_p50/p90/p99``: each one aggregation of the latency."""
    out = [
        Metric("latency_avg", "ms", f"mean {_LATENCY_DOC}", columns, by_agg=(("mean", sql["mean"]),)),
        Metric("latency_max", "ms", f"highest {_LATENCY_DOC}", columns, by_agg=(("max", sql["max"]),)),
    ]
    out += [Metric(f"latency_{p}", "ms", f"{p} {_LATENCY_DOC} (t-digest)", columns, by_agg=((p, sql[p]),))
            for p in _QUANTILE_NAMES]  # fmt: skip
    return out


def request_metrics() -> list[Metric]:
    """Over the request rollups (the metric names of docs/requests.md, "Stored")."""
    latency = _rollup_latency()
    columns = ("latency_sum_us", "latency_max_us", "latency_digest", "answered")
    out = [
        Metric("requests", "requests", "requests (answered, timed out or unanswered)", ("requests",),
               value="requests"),
        Metric("errors", "requests", "requests that failed: client errors, server errors, timeouts, unanswered",
               ("client_errors", "server_errors", "timeouts"), value=_ERRORS_ROLLUP),
        Metric("client_errors", "requests", "answered with a client error (HTTP 4xx...)", ("client_errors",),
               value="client_errors"),
        Metric("server_errors", "requests", "answered with a server error (HTTP 5xx...)", ("server_errors",),
               value="server_errors"),
        Metric("timeouts", "requests", "no response: timed out or unanswered", ("timeouts",), value="timeouts"),
        Metric("answered", "requests", "requests with a response", ("answered",), value="answered"),
        Metric("error_rate", "ratio", "errors / requests", ("client_errors", "server_errors", "timeouts", "requests"),
               ratio=(_ERRORS_ROLLUP, "requests")),
        Metric("latency", "ms", f"{_LATENCY_DOC}: mean, max, p50, p90, p99", columns,
               by_agg=tuple(latency.items())),
    ]  # fmt: skip
    return out + _latency_metrics(columns, latency)


def request_log_metrics() -> list[Metric]:
    """Over request records: the rollups' names, and ``latency`` with any percentile."""
    failed = "status != 'ok'"
    out = [
        Metric("requests", "requests", "requests (answered, timed out or unanswered)", (), count="count()"),
        Metric("errors", "requests", "requests that failed: client and server errors, timeouts, unanswered",
               ("status",), count=f"countIf({failed})"),
        Metric("client_errors", "requests", "answered with a client error", ("status",),
               count="countIf(status = 'client_error')"),
        Metric("server_errors", "requests", "answered with a server error", ("status",),
               count="countIf(status = 'server_error')"),
        Metric("timeouts", "requests", "no response: timed out or unanswered", ("status",),
               count="countIf(status IN ('timeout', 'unanswered'))"),
        Metric("answered", "requests", "requests with a response", ("latency_us",),
               count="countIf(latency_us >= 0)"),
        Metric("error_rate", "ratio", "errors / requests", ("status",), ratio=(f"toUInt8({failed})", "1")),
        Metric("latency", "ms", _LATENCY_DOC, ("latency_us",), value="latency_us / 1000", cond="latency_us >= 0",
               record_level=True),
    ]  # fmt: skip
    return out + _latency_metrics(("latency_us",), _record_latency())


__all__ = ["request_log_metrics", "request_metrics"]

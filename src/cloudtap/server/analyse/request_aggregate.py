"""One SQL shape for request metrics: request rollup rows grouped by keys (and time bucket).

Counts are summed, the maximum latency maxed and the t-digests merged per group
(``quantilesTDigestMerge(0.5, 0.9, 0.99)(latency_digest)``); every answer has the
:data:`~cloudtap.server.analyse.metrics.REQUEST_COLUMNS`. A request between VMs on two hypervisors is
seen by both agents; with ``dedup`` (the default) the group takes every column from the agent that saw
most requests in it (ties: the greater agent id), as :mod:`~cloudtap.server.analyse.aggregate` keeps the
busiest agent's sums for edges.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field

from cloudtap.server.analyse._sql import bucket_sql

#: Quantiles the rollups' digests keep (same order as ``latency_p50_us``, ``_p90_us``, ``_p99_us``).
QUANTILES = "0.5, 0.9, 0.99"
#: (inner alias, aggregate over rollup rows) per group and agent.
_INNER = (
    ("_r", "sum(requests)"),
    ("_ce", "sum(client_errors)"),
    ("_se", "sum(server_errors)"),
    ("_to", "sum(timeouts)"),
    ("_an", "sum(answered)"),
    ("_ls", "sum(latency_sum_us)"),
    ("_lm", "max(latency_max_us)"),
    ("_q", f"arrayMap(x -> toFloat64(x), quantilesTDigestMerge({QUANTILES})(latency_digest))"),
)


def _outputs(packed: str | None) -> list[str]:
    """``REQUEST_COLUMNS`` from the inner aliases, or from the tuple ``packed`` holding them in order."""
    order = [a for a, _ in _INNER]

    def c(alias: str) -> str:
        return alias if packed is None else f"tupleElement({packed}, {order.index(alias) + 1})"

    answered = c("_an")
    return [
        f"toUInt64({c('_r')}) AS requests", f"toUInt64({c('_ce')}) AS client_errors",
        f"toUInt64({c('_se')}) AS server_errors", f"toUInt64({c('_to')}) AS timeouts",
        f"toUInt64({c('_ce')} + {c('_se')} + {c('_to')}) AS errors", f"toUInt64({answered}) AS answered",
        f"toFloat64({c('_ls')}) AS latency_sum_us", f"toFloat64({c('_lm')}) AS latency_max_us",
        *(f"if({answered} > 0, {c('_q')}[{i + 1}], 0) AS latency_p{p}_us" for i, p in enumerate((50, 90, 99))),
    ]  # fmt: skip


@dataclass
class RequestAggregate:
    """A grouped aggregation over one request rollup.

    Attributes:
        source: quoted ``db.table`` (or a parenthesised subquery with the rollup's columns).
        keys: (SQL expression, alias) pairs grouped by.
        where: conditions (ANDed).
        step_s: bucket width; adds a ``bucket`` column (epoch seconds) when set.
        dedup: take each group from the agent that saw most of its requests.
        extra: (inner aggregate, outer aggregate over the inner alias ``{a}``, alias), as in
            :class:`~cloudtap.server.analyse.aggregate.Aggregate`.
    """

    source: str
    keys: list[tuple[str, str]]
    where: list[str]
    step_s: int | None = None
    dedup: bool = True
    extra: list[tuple[str, str, str]] = field(default_factory=list)

    def sql(self) -> str:
        """The SELECT (no ORDER BY / LIMIT: wrap it for those)."""
        keys = list(self.keys)
        if self.step_s:
            keys.append((bucket_sql(self.step_s), "bucket"))
        where = " AND ".join(self.where) or "1"
        inner = [f"{e} AS _k{i}" for i, (e, _) in enumerate(keys)] + (
            ["agent_id AS _agent"] if self.dedup else []
        )
        inner += [f"{agg} AS {alias}" for alias, agg in _INNER]
        inner += [f"{x} AS _x{i}" for i, (x, _, _) in enumerate(self.extra)]
        group = [f"_k{i}" for i in range(len(keys))]
        inner_sql = (
            f"SELECT {', '.join(inner)} FROM {self.source} WHERE {where} "
            f"GROUP BY {', '.join(group + (['_agent'] if self.dedup else [])) or 'tuple()'}"
        )
        outer = [f"_k{i} AS {a}" for i, (_, a) in enumerate(keys)]
        if not self.dedup:
            outer += _outputs(None)
            outer += [f"_x{i} AS {a}" for i, (_, _, a) in enumerate(self.extra)]
            return f"SELECT {', '.join(outer)} FROM ({inner_sql})"
        busiest = f"argMax(tuple({', '.join(a for a, _ in _INNER)}), tuple(_r, _agent)) AS _t"
        middle = [*group, busiest] + [
            f"{o.format(a=f'_x{i}')} AS _x{i}" for i, (_, o, _) in enumerate(self.extra)
        ]
        middle_sql = f"SELECT {', '.join(middle)} FROM ({inner_sql}) GROUP BY {', '.join(group) or 'tuple()'}"
        outer += _outputs("_t")
        outer += [f"_x{i} AS {a}" for i, (_, _, a) in enumerate(self.extra)]
        return f"SELECT {', '.join(outer)} FROM ({middle_sql})"


class RequestStats(BaseModel):
    """Requests of one group (an edge, a service, a bucket); latencies in ms, None without answers."""

    requests: int
    errors: int = Field(description="client_errors + server_errors + timeouts")
    client_errors: int
    server_errors: int
    timeouts: int = Field(description="timed out or unanswered")
    answered: int
    error_rate: float = Field(description="errors / requests")
    latency_avg_ms: float | None
    latency_p50_ms: float | None
    latency_p90_ms: float | None
    latency_p99_ms: float | None
    latency_max_ms: float | None

    @classmethod
    def of(cls, row: dict[str, Any]) -> RequestStats:
        """From one row with the ``REQUEST_COLUMNS``."""
        n, answered = int(row["requests"]), int(row["answered"])

        def ms(value: float) -> float | None:
            return round(float(value) / 1000.0, 3) if answered else None

        return cls(
            requests=n, errors=int(row["errors"]), client_errors=int(row["client_errors"]),
            server_errors=int(row["server_errors"]), timeouts=int(row["timeouts"]), answered=answered,
            error_rate=round(int(row["errors"]) / n, 6) if n else 0.0,
            latency_avg_ms=ms(float(row["latency_sum_us"]) / answered) if answered else None,
            latency_p50_ms=ms(row["latency_p50_us"]), latency_p90_ms=ms(row["latency_p90_us"]),
            latency_p99_ms=ms(row["latency_p99_us"]), latency_max_ms=ms(row["latency_max_us"]),
        )  # fmt: skip

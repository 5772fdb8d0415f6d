"""A metric of the query catalog: a measure and the aggregations it allows (see ``catalog.py``)."""

from __future__ import annotations

from dataclasses import dataclass

AGGS_ROLLUP = ("sum", "rate")
AGGS_RECORD = ("sum", "rate", "mean", "min", "max", "pXX")


@dataclass(frozen=True)
class Metric:
    """A measure and how it aggregates.

    Exactly one of ``value`` (a per-row value, summed or, on the flow log, averaged/ranked),
    ``count`` (an aggregate expression counting rows), ``ratio`` (sum / sum, a mean kept as
    sum + count in rollups) and ``by_agg`` (the aggregate expression of each aggregation it has,
    e.g. quantiles merged from the request rollups' t-digests) is set.
    """

    name: str
    unit: str
    doc: str
    columns: tuple[str, ...]
    value: str | None = None
    cond: str | None = None  #: rows where ``value`` is defined (None: all)
    count: str | None = None
    ratio: tuple[str, str] | None = None
    record_level: bool = False  #: one row per flow record: mean/min/max/percentiles allowed
    by_agg: tuple[tuple[str, str], ...] = ()  #: (aggregation, SQL) pairs, the first the default

    @property
    def default_agg(self) -> str:
        """The first of ``by_agg``, ``mean`` for RTTs, ``sum`` for the rest."""
        if self.by_agg:
            return self.by_agg[0][0]
        return "mean" if self.ratio is not None or self.cond is not None else "sum"

    @property
    def aggs(self) -> tuple[str, ...]:
        """Aggregations allowed (``pXX`` stands for any percentile)."""
        if self.by_agg:
            return tuple(agg for agg, _ in self.by_agg)
        if self.ratio is not None:
            return ("mean",)
        if self.count is not None:
            return AGGS_ROLLUP
        if self.cond is not None:
            return ("mean", "min", "max", "pXX")
        return AGGS_RECORD if self.record_level else AGGS_ROLLUP


__all__ = ["AGGS_RECORD", "AGGS_ROLLUP", "Metric"]

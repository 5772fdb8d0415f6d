"""Bucket series of selected traffic: aggregated in ClickHouse, returned zero-filled as numpy arrays.

A series of an edge rollup holds the edge sums (``SERIES_COLUMNS``); one of a request rollup
(``request_*``) the ``REQUEST_COLUMNS`` of each bucket (counts, latency sum, maximum and percentiles).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cloudtap.inventory.names import NameResolver
from cloudtap.server.analyse._sql import NS, Params, table, time_where
from cloudtap.server.analyse.aggregate import Aggregate
from cloudtap.server.analyse.metrics import REQUEST_COLUMNS, SERIES_COLUMNS, metric_valid, metric_values
from cloudtap.server.analyse.request_aggregate import RequestAggregate
from cloudtap.server.analyse.robust import dense_series
from cloudtap.server.analyse.selector import Selector, check_request_filter, edge_where_sides
from cloudtap.server.analyse.window import Window, bucket_count


@dataclass
class Series:
    """Sums per bucket over ``[start_s, start_s + n * step_s)``."""

    start_s: int
    step_s: int
    sums: dict[str, np.ndarray]  #: SERIES_COLUMNS (or REQUEST_COLUMNS) -> float64[n]
    stored_table: str

    @property
    def n(self) -> int:
        """Buckets."""
        return len(next(iter(self.sums.values())))

    @property
    def times_s(self) -> np.ndarray:
        """Bucket starts, epoch seconds."""
        return self.start_s + np.arange(self.n, dtype=np.int64) * self.step_s

    def metric(self, name: str) -> np.ndarray:
        """One metric per bucket."""
        return metric_values(name, self.sums)

    def valid(self, name: str) -> np.ndarray:
        """Buckets where ``name`` has a value (latencies: buckets with answered requests)."""
        return metric_valid(name, self.sums)


def is_request_table(stored: str) -> bool:
    """True for a request rollup."""
    return stored.startswith("request_")


def fetch_series(store: Any, stored: str, window: Window, step_s: int, where: list[str], params: Params,
                 dedup: bool = True, either: tuple[str, str] | None = None) -> Series:  # fmt: skip
    """Series of the rows of ``stored`` matching ``where`` over ``window``.

    Args:
        store: the flow store.
        stored: edge table name.
        window: the range (bucket aligned outwards).
        step_s: bucket width.
        where: conditions already bound in ``params`` (the time range is added here).
        params: the bound parameters.
        dedup: count traffic seen by two agents once.
        either: rows must also match one of these two conditions (e.g. the subject as client, as
            server); read as two scans glued by ``UNION ALL`` (a row matching both counts once), so each
            side uses its own index.
    """
    n = bucket_count(window, step_s)
    start_s = window.start_ns // NS // step_s * step_s
    conds = [time_where(window.start_ns, window.end_ns, params), *where]
    source = table(store.database, stored)
    if either is not None:
        base = " AND ".join(conds)
        first, second = either
        source = (f"(SELECT * FROM {source} WHERE {base} AND {first} "
                  f"UNION ALL SELECT * FROM {source} WHERE {base} AND {second} AND NOT ({first}))")  # fmt: skip
        conds = []
    if is_request_table(stored):
        columns: tuple[str, ...] = REQUEST_COLUMNS
        sql = RequestAggregate(source, [], conds, step_s, dedup).sql()
    else:
        columns = SERIES_COLUMNS
        sql = Aggregate(source, [], [(c, c) for c in SERIES_COLUMNS], conds, step_s, dedup).sql()
    data = store.query_arrow(sql, params.values)
    buckets = data["bucket"].to_numpy() if data.num_rows else np.zeros(0, np.int64)
    sums = {
        c: dense_series(buckets, data[c].to_numpy() if data.num_rows else np.zeros(0), start_s, n, step_s)
        for c in columns
    }
    return Series(start_s, step_s, sums, stored)


def selector_series(store: Any, stored: str, window: Window, step_s: int, selector: Selector,
                    names: NameResolver, dedup: bool = True) -> Series:  # fmt: skip
    """Series of the traffic ``selector`` picks (names resolved in the middle of ``window``)."""
    if is_request_table(stored):
        check_request_filter(selector)
    params = Params()
    sides, where = edge_where_sides(selector, params, names, window.mid_ns)
    return fetch_series(store, stored, window, step_s, where, params, dedup, sides)

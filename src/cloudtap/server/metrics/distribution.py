"""Distribution: a cumulative histogram kept by plain Python code and read by a collector at scrape time.

The ingest path records into it without knowing Prometheus (``Ingestor.insert_timings``,
``Coalescer.group_sizes``); :mod:`cloudtap.server.metrics.ingest` turns it into a histogram family.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

#: Seconds: from a fast chDB insert (a few ms) to a long-poll or a big analysis (a minute).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: Batches per coalesced insert (``ingest.max_group_batches`` defaults to 1000).
GROUP_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


class Distribution:
    """Observed values by upper bound (thread-safe); ``snapshot`` gives Prometheus's cumulative buckets.

    Args:
        buckets: increasing upper bounds (``+Inf`` is implied).
    """

    def __init__(self, buckets: Sequence[float] = LATENCY_BUCKETS) -> None:
        if list(buckets) != sorted(set(buckets)) or not buckets:
            raise ValueError(f"buckets must be distinct and increasing, got {list(buckets)}")
        self.bounds = tuple(float(b) for b in buckets)
        self._counts = [0] * (len(self.bounds) + 1)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        """Count one value (NaN is ignored)."""
        if math.isnan(value):
            return
        i = bisect.bisect_left(self.bounds, value)
        with self._lock:
            self._counts[i] += 1
            self._sum += value

    @contextmanager
    def time(self) -> Iterator[None]:
        """Observe the seconds the ``with`` block took (also when it raises)."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.observe(time.perf_counter() - t0)

    @property
    def count(self) -> int:
        """Values observed."""
        with self._lock:
            return sum(self._counts)

    def snapshot(self) -> tuple[list[tuple[str, float]], float]:
        """``([(le, cumulative count)...,("+Inf", count)], sum)`` as ``HistogramMetricFamily`` takes them."""
        with self._lock:
            counts, total = list(self._counts), self._sum
        buckets, running = [], 0
        for bound, n in zip((*self.bounds, math.inf), counts, strict=True):
            running += n
            buckets.append(("+Inf" if bound == math.inf else _le(bound), float(running)))
        return buckets, total


def _le(bound: float) -> str:
    return repr(float(bound))

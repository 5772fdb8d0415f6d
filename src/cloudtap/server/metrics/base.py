"""What every scrape-time collector shares: reading app state safely, and families built in one line."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from cloudtap.server.metrics.distribution import Distribution

log = logging.getLogger(__name__)


class AppCollector:
    """A collector that reads ``app.state`` at each scrape; a failure costs its families, not the scrape.

    Subclasses set ``name`` and implement :meth:`families`. Failures are counted in ``errors`` (exposed
    as ``cloudtap_server_metrics_collector_errors_total{collector}`` by the registry) and logged.
    """

    name = "app"

    def __init__(self, app: Any) -> None:
        self.app = app
        self.errors = 0

    def state(self, attribute: str) -> Any:
        """``app.state.<attribute>``, or None (never builds anything)."""
        return getattr(self.app.state, attribute, None)

    def families(self) -> Iterable[Metric]:
        raise NotImplementedError

    def collect(self) -> Iterator[Metric]:
        try:
            found = list(self.families())
        except Exception:  # a scrape must answer: this collector's families are left out and counted
            self.errors += 1
            log.exception("metrics: the %s collector failed", self.name)
            return iter(())
        return iter(found)

    def describe(self) -> list[Metric]:
        return []  # nothing checked at registration: families depend on the app's state at scrape time


def counter(name: str, doc: str, value: float | None = None, labels: Iterable[str] = ()) -> CounterMetricFamily:
    """A counter family (``name`` without ``_total``), with one unlabelled value when given."""
    return CounterMetricFamily(name, doc, value=value, labels=list(labels) or None)


def gauge(name: str, doc: str, value: float | None = None, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    """A gauge family, with one unlabelled value when given."""
    return GaugeMetricFamily(name, doc, value=value, labels=list(labels) or None)


def histogram(name: str, doc: str, labels: Iterable[str] = ()) -> HistogramMetricFamily:
    """An empty histogram family; fill it with :func:`add_distribution`."""
    return HistogramMetricFamily(name, doc, labels=list(labels))


def add_distribution(family: HistogramMetricFamily, values: list[str], dist: Distribution) -> None:
    """One labelled histogram from a :class:`Distribution`."""
    buckets, total = dist.snapshot()
    family.add_metric(values, buckets, total)

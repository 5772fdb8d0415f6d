"""Findings metrics: findings by kind and severity, the engine's cycles, failures and webhook deliveries.

``cloudtap_server_findings_open`` counts the findings updated in the last day (wall clock) that are neither
acknowledged nor muted (one small query of the findings table per scrape, through the app's store);
the counters come from the engine (``app.state.findings_engine``) and its webhook.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import Metric

from cloudtap.server.findings.model import KINDS, SEVERITIES
from cloudtap.server.metrics.base import AppCollector, counter, gauge

P = "cloudtap_server_findings_"
OPEN_WINDOW_S = 86_400


class FindingsCollector(AppCollector):
    """``cloudtap_server_findings_*``."""

    name = "findings"

    def families(self) -> Iterator[Metric]:
        engine = self.state("findings_engine")
        if engine is None:
            return
        new = counter(P + "new", "findings created, by kind and severity", labels=["kind", "severity"])
        for kind in KINDS:
            for sev in SEVERITIES:
                new.add_metric([kind, sev], engine.new_findings.get((kind, sev), 0))
        yield new
        det = counter(P + "detections", "detections (new findings and extensions), by kind", labels=["kind"])
        for kind in KINDS:
            det.add_metric([kind], engine.detections.get(kind, 0))
        yield det
        yield counter(P + "cycles", "minutes the engine processed", engine.cycles)
        errors = counter(P + "errors", "detector, rule or delivery failures", labels=["part"])
        for part, n in sorted(engine.errors.items()):
            errors.add_metric([part], n)
        yield errors
        yield gauge(P + "last_cycle_seconds", "wall time of the last cycle", engine.last_cycle_s)
        yield gauge(P + "last_minute_timestamp_seconds", "start of the last minute processed (0: none)",
                    engine.last_minute or 0)  # fmt: skip
        loop = self.state("findings_loop")
        yield counter(P + "loop_failures", "scheduled passes that failed", getattr(loop, "failures", 0))
        hook = self.state("findings_webhook")
        if hook is not None:
            yield counter(P + "webhook_posts", "webhook requests answered 2xx", hook.sent)
            yield counter(P + "webhook_failures", "webhook deliveries given up after their retries", hook.failed)
            yield counter(P + "webhook_retries", "webhook attempts made again after a retryable failure", hook.retries)
            yield counter(P + "webhook_alerts", "alerts delivered through the webhook", hook.alerts)
        yield from self._open(engine)

    def _open(self, engine: object) -> Iterator[Metric]:
        import time

        rows = engine.findings.find(updated_from=time.time() - OPEN_WINDOW_S, limit=10_000)  # type: ignore[attr-defined]
        found = gauge(P + "open", "findings updated in the last day, neither acknowledged nor muted, by kind and severity",
                      labels=["kind", "severity"])  # fmt: skip
        counts: dict[tuple[str, str], int] = {}
        for f in rows:
            if f.state == "open":
                counts[(f.kind, f.severity)] = counts.get((f.kind, f.severity), 0) + 1
        for kind in KINDS:
            for sev in SEVERITIES:
                found.add_metric([kind, sev], counts.get((kind, sev), 0))
        yield found

"""Ingest metrics: batches, rows and bytes by kind, refusals by reason, coalescing, the queue, insert times.

Read at scrape time from ``app.state.ingestor`` (``IngestStats``, ``insert_timings``) and
``app.state.ingest_coalescer`` (built at the first coalesced batch; zeros until then).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import Metric

from cloudtap.server.metrics.base import AppCollector, add_distribution, counter, gauge, histogram
from cloudtap.server.metrics.distribution import GROUP_BUCKETS, Distribution
from cloudtap.server.store.base import KINDS

P = "cloudtap_server_ingest_"


class IngestCollector(AppCollector):
    """``cloudtap_server_ingest_*`` and ``cloudtap_server_storage_insert_seconds``."""

    name = "ingest"

    def families(self) -> Iterator[Metric]:
        ingestor = self.state("ingestor")
        if ingestor is None:
            return
        stats = ingestor.stats
        batches = counter(P + "batches", "batches answered: stored, duplicate (stored before), rejected",
                          labels=["result"])  # fmt: skip
        batches.add_metric(["stored"], stats.batches - stats.duplicates)
        batches.add_metric(["duplicate"], stats.duplicates)
        batches.add_metric(["rejected"], stats.rejected)
        yield batches
        rejected = counter(P + "rejected", "batches refused, by reason", labels=["reason"])
        for reason, n in sorted(dict(stats.rejected_by_reason).items()):
            rejected.add_metric([reason], n)
        yield rejected
        yield _by_kind(P + "rows", "rows newly stored (duplicates not counted), by stream kind", stats.stored_rows)
        yield _by_kind(P + "acknowledged_rows", "rows acknowledged (duplicate resends included), by stream kind",
                       stats.rows)  # fmt: skip
        yield _by_kind(P + "bytes", "decoded (Arrow) bytes newly stored, by stream kind", stats.stored_bytes)
        yield counter(P + "wire_bytes", "encoded (compressed) bytes of the batches newly stored", stats.wire_bytes)
        yield counter(P + "throttled", "batches answered 429 (ingest queue full; the agent resends them later)",
                      stats.throttled)  # fmt: skip
        yield counter(P + "tag_errors", "batches stored untagged because inventory tagging failed", stats.tag_errors)
        inserts = histogram("cloudtap_server_storage_insert_seconds",
                            "time of one store write: one batch (single) or one coalesced group", ["path"])  # fmt: skip
        for path, dist in sorted(ingestor.insert_timings.items()):
            add_distribution(inserts, [path], dist)
        yield inserts
        yield from self._coalescing()

    def _coalescing(self) -> Iterator[Metric]:
        settings = self.state("settings")
        merger = self.state("ingest_coalescer")
        window = settings.ingest.coalesce_ms / 1000 if settings is not None else 0.0
        yield gauge(P + "coalesce_window_seconds", "ingest.coalesce_ms: how long a group waits for more batches",
                    window)  # fmt: skip
        groups = getattr(merger, "groups_written", 0)
        yield counter(P + "coalesced_inserts", "group inserts the coalescer wrote (one block per table each)", groups)
        sizes = histogram(P + "group_batches", "batches per coalesced insert")
        add_distribution(sizes, [], getattr(merger, "group_sizes", None) or Distribution(GROUP_BUCKETS))
        yield sizes
        depth = merger.depth() if merger is not None else None
        yield gauge(P + "queue_batches", "batches accepted and not answered yet (open, queued, writing, failed)",
                    depth.batches if depth else 0)  # fmt: skip
        yield gauge(P + "queue_groups", "groups closed and waiting for the writer", depth.groups if depth else 0)
        yield gauge(P + "failed_groups", "groups whose insert failed, waiting for a resend or a restart",
                    depth.failed_groups if depth else 0)  # fmt: skip


def _by_kind(name: str, doc: str, values: dict[str, int]) -> Metric:
    family = counter(name, doc, labels=["kind"])
    for kind in sorted(set(KINDS) | set(values)):
        family.add_metric([kind], values.get(kind, 0))
    return family

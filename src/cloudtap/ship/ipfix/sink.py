"""IpfixTee: the agent's flow records also go to IPFIX collectors, beside its record sink, never in its way.

The meter callback hands records to :meth:`IpfixTee.tee`'s wrapper, which calls the agent's own
output first and then queues one copy of the records per collector without waiting. One thread per
collector encodes and sends. A full queue (collector slow or unreachable) drops the batch for that
collector only, counted; shipping to the server or to files never waits on a collector.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any, Protocol

import numpy as np

from cloudtap.ship.ipfix.exporter import IpfixExporter

log = logging.getLogger(__name__)
#: Record batches waiting per collector before new ones are dropped (counted).
QUEUE_BATCHES = 256
#: Seconds :meth:`IpfixTee.close` waits for queued records to go out.
CLOSE_WAIT_S = 5.0
_STOP = object()


class IpfixTargetSettings(Protocol):
    """One collector as the agent config describes it (``output.ipfix[]``)."""

    url: str
    mtu: int | None
    template_refresh_s: float
    template_refresh_messages: int


class _Collector:
    def __init__(self, exporter: IpfixExporter) -> None:
        self.exporter = exporter
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=QUEUE_BATCHES)
        self.queue_drops = 0  #: records dropped because the queue was full
        self.thread = threading.Thread(target=self._run, name=f"ipfix {exporter.url}", daemon=True)

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            if item is _STOP:
                return
            try:
                self.exporter.export(item)
            except Exception as exc:  # noqa: BLE001 - the exporter thread must not die; count and go on
                self.exporter.counters.errors += 1
                self.exporter.counters.last_error = f"export: {exc}"
                log.warning("ipfix %s: %s", self.exporter.url, exc)


class IpfixTee:
    """Export flow records to IPFIX collectors from background threads."""

    def __init__(self, exporters: Sequence[IpfixExporter]) -> None:
        self._collectors = [_Collector(e) for e in exporters]
        for c in self._collectors:
            c.thread.start()

    @classmethod
    def from_settings(cls, targets: Sequence[IpfixTargetSettings]) -> IpfixTee | None:
        """One exporter per configured target; None when there is none.

        Raises:
            ConfigError: a target's URL or MTU is invalid.
        """
        if not targets:
            return None
        return cls(
            [
                IpfixExporter(
                    t.url,
                    mtu=t.mtu,
                    refresh_messages=t.template_refresh_messages,
                    refresh_s=t.template_refresh_s,
                )
                for t in targets
            ]
        )

    def submit(self, records: np.ndarray) -> None:
        """Queue a copy of ``records`` for every collector; never blocks."""
        if not len(records):
            return
        batch = records.copy()  # the meter reuses its output buffer
        for c in self._collectors:
            try:
                c.queue.put_nowait(batch)
            except queue.Full:
                c.queue_drops += len(batch)

    def tee(self, on_records: Callable[[np.ndarray], None]) -> Callable[[np.ndarray], None]:
        """``on_records`` followed by :meth:`submit` (which cannot fail the caller)."""

        def both(records: np.ndarray) -> None:
            on_records(records)
            try:
                self.submit(records)
            except Exception as exc:  # noqa: BLE001 - export trouble must never reach the capture worker
                log.warning("ipfix: %s", exc)

        return both

    def counters(self) -> dict[str, dict[str, Any]]:
        """Per collector URL: messages, records, bytes, errors, records_lost (send failures + full queue)."""
        out: dict[str, dict[str, Any]] = {}
        for c in self._collectors:
            counts = asdict(c.exporter.counters)
            counts["records_lost"] += c.queue_drops
            counts["queued_batches"] = c.queue.qsize()
            out[c.exporter.url] = counts
        return out

    def close(self, wait_s: float = CLOSE_WAIT_S) -> None:
        """Send what is queued (up to ``wait_s`` in all), then stop the threads and close the sockets."""
        deadline = time.monotonic() + wait_s
        for c in self._collectors:
            try:
                c.queue.put(_STOP, timeout=max(0.0, deadline - time.monotonic()))
            except queue.Full:
                pass
        for c in self._collectors:
            c.thread.join(timeout=max(0.0, deadline - time.monotonic()))
            c.exporter.close()

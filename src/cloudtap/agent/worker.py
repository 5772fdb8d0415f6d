"""CaptureWorker: one thread that owns a packet source, a pipeline and a flow meter.

Batches move source -> (pps limiter) -> decode -> (dedup) -> meter inside the worker's thread; the
meter's records leave through callbacks into the agent's output stage. Workers share nothing but the
output stage (which locks) and the observation-point table.

With requests enabled the worker also owns a :class:`~cloudtap.l7.RequestParser` fed with the same
decoded rows (:meth:`CaptureWorker.request_tap`, chained into the pipeline's packet filter); its
request records go to ``on_requests``, and every flow record takes its flow's request counts
(``RequestParser.annotate_flows``) before it reaches ``on_records``.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable

import numpy as np

from cloudtap.agent.guard import CpuGovernor, PpsLimiter
from cloudtap.agent.identity import ObservationPoints
from cloudtap.capture.frames import FrameBatch
from cloudtap.capture.source import PacketSource, SourceStats
from cloudtap.l7.parser import RequestConfig, RequestParser
from cloudtap.l7.pipeline import period_slices
from cloudtap.meter import FramePipeline, Meter, MeterConfig
from cloudtap.meter.pipeline import PacketFilter

log = logging.getLogger(__name__)

#: Longest time records and edge deltas wait in the meter's output buffer before going to the output.
DRAIN_INTERVAL_S = 0.5

SourceFactory = Callable[[], PacketSource]
Sink = Callable[[np.ndarray], None]


@dataclasses.dataclass
class WorkerCounters:
    """What one worker did (cumulative)."""

    batches: int = 0
    packets: int = 0
    wire_bytes: int = 0
    pps_limit_drops: int = 0
    restarts: int = 0
    errors: int = 0
    last_error: str = ""


class CaptureWorker:
    """Reads batches from its source and meters them until stopped."""

    def __init__(
        self,
        name: str,
        source_factory: SourceFactory,
        meter_config: MeterConfig,
        points: ObservationPoints,
        on_records: Sink,
        on_edges: Sink,
        limiter: PpsLimiter,
        governor: CpuGovernor,
        bpf: str | None = None,
        live_clock: bool = True,
        fragment_capacity: int = 65536,
        request_config: RequestConfig | None = None,
        on_requests: Sink | None = None,
    ) -> None:
        self.name = name
        self._source_factory = source_factory
        self._points = points
        self._limiter = limiter
        self._governor = governor
        self._live_clock = live_clock
        #: the request parser (None: requests not parsed); owned by the worker's thread like the meter
        self.requests = RequestParser(request_config, on_records=on_requests) if request_config else None
        #: optional frame selection for the parser (e.g. the capture policy's ``wants_requests``); None: all
        self.request_select: Callable[[FrameBatch], np.ndarray] | None = None
        self._on_records = on_records
        flow_sink = self._annotate_flows if self.requests is not None else on_records
        self.meter = Meter(meter_config, on_records=flow_sink, on_edges=on_edges)
        self.pipeline = FramePipeline(self.meter, bpf=bpf, fragment_capacity=fragment_capacity)
        self.counters = WorkerCounters()
        self.source: PacketSource | None = None
        self._source_stats_closed = SourceStats()
        self._lock = threading.Lock()
        self._capturing = threading.Event()
        self._stop = threading.Event()
        self.finished = threading.Event()  #: set when a finite source (replay) is exhausted
        self._thread = threading.Thread(target=self._run, name=f"capture-{name}", daemon=True)
        self._iface_names: list[str] = []
        self._iface_ids = np.zeros(0, np.uint16)
        self._last_drain = time.monotonic()
        #: packet time of the next drain that keeps request counts in their record period
        self._next_period_drain_ns = 0
        self._period_ns = int(request_config.count_period_s * 1e9) if request_config else 0
        self._period_margin_ns = int(2 * meter_config.scan_interval_s * 1e9)

    # -- requests (the worker's thread) -------------------------------------------------------------
    def request_tap(self, previous: PacketFilter | None = None) -> PacketFilter | None:
        """A pipeline ``packet_filter`` feeding the request parser what ``previous`` keeps (or everything); it
        keeps the same rows. Returns ``previous`` unchanged when requests are not parsed."""
        parser = self.requests
        if parser is None:
            return previous

        def request_filter(frames: FrameBatch, packets: np.ndarray) -> np.ndarray:
            keep = previous(frames, packets) if previous is not None else None
            parse = keep
            if self.request_select is not None:
                wanted = self.request_select(frames)
                parse = wanted if keep is None else keep & wanted
            parser.add(frames, packets if parse is None or parse.all() else packets[parse])
            return keep if keep is not None else np.ones(len(packets), np.bool_)

        return request_filter

    def _annotate_flows(self, records: np.ndarray) -> None:
        if self.requests is not None:
            self.requests.annotate_flows(records)
        self._on_records(records)

    def _drain(self) -> None:
        self.meter.drain()  # flow records take their counts on the way out
        if self.requests is not None:
            self.requests.expire_counts()
            self.requests.drain()

    def _flush(self) -> None:
        """End of input: pending requests end, then flows (taking the counts), then unclaimed counts go late."""
        if self.requests is not None:
            self.requests.flush()
        self.meter.flush()
        if self.requests is not None:
            self.requests.release_counts()
            self.requests.drain()

    # -- control (any thread) ---------------------------------------------------------------------
    def start(self) -> None:
        """Start the thread with capture on."""
        self._capturing.set()
        self._thread.start()

    def set_capturing(self, on: bool) -> None:
        """Open or close the source; takes effect within one read timeout (0.1 s).

        A finite source (a replay) is paused instead of closed, so it resumes where it stopped, and once it
        has finished it never starts again: reopening would replay the file from the start, twice stored.
        """
        if on:
            if self.finished.is_set():
                return
            self._capturing.set()
        else:
            self._capturing.clear()

    @property
    def capturing(self) -> bool:
        """True while a source is open (after a stop, false only once the source is really closed); a
        paused finite source is open but not capturing."""
        source = self.source
        return source is not None and (self._capturing.is_set() or not _finite(source))

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop the thread, flush the meter, close the source."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def source_stats(self) -> SourceStats:
        """The source's counters, including those of sources closed earlier."""
        with self._lock:
            live = self.source.stats() if self.source is not None else SourceStats()
            done = self._source_stats_closed
        total = SourceStats(
            packets=live.packets + done.packets,
            bytes=live.bytes + done.bytes,
            kernel_drops=live.kernel_drops + done.kernel_drops,
            filter_drops=live.filter_drops + done.filter_drops,
            duplicates=live.duplicates + done.duplicates,
            errors=live.errors + done.errors,
        )
        per: dict[str, dict[str, int]] = {k: dict(v) for k, v in done.per_interface.items()}
        for name, counters in live.per_interface.items():
            slot = per.setdefault(name, {})
            for key, value in counters.items():
                slot[key] = slot.get(key, 0) + value
        total.per_interface = per
        return total

    def with_source(self, action: Callable[[PacketSource], None]) -> None:
        """Run ``action`` on the open source under the worker's lock (interface add/remove)."""
        with self._lock:
            if self.source is not None:
                action(self.source)

    # -- the thread ---------------------------------------------------------------------------------
    def _open(self) -> None:
        source = self._source_factory()
        with self._lock:
            self.source = source

    def _close(self) -> None:
        with self._lock:
            source, self.source = self.source, None
            if source is None:
                return
            stats = source.stats()
            source.close()
            done = self._source_stats_closed
            done.packets += stats.packets
            done.bytes += stats.bytes
            done.kernel_drops += stats.kernel_drops
            done.filter_drops += stats.filter_drops
            done.duplicates += stats.duplicates
            done.errors += stats.errors
            for name, counters in stats.per_interface.items():
                slot = done.per_interface.setdefault(name, {})
                for key, value in counters.items():
                    slot[key] = slot.get(key, 0) + value

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if not self._capturing.is_set():
                    if self.source is not None and not _finite(self.source):
                        self._close()
                    self._tick()
                    self._stop.wait(0.05)
                    continue
                if self.source is None:
                    try:
                        self._open()
                    except Exception as exc:  # noqa: BLE001 - reported, retried, never fatal to the host
                        self.counters.errors += 1
                        self.counters.last_error = str(exc)
                        log.error("worker %s: cannot open source: %s", self.name, exc)
                        self._stop.wait(1.0)
                        continue
                with self._lock:
                    source = self.source
                try:
                    batch = source.read(0.1) if source is not None else None
                except EOFError:
                    self._flush()  # end of input: every flow ends now, as in ``meter_file``
                    self.finished.set()
                    self._capturing.clear()
                    continue
                if batch is None or len(batch) == 0:
                    self._tick()
                    continue
                self._process(batch, source)
                self._drain_due()
                self._governor.pace()
        finally:
            self._close()
            self._flush()

    def _tick(self) -> None:
        if self._live_clock:
            now = time.time_ns()
            if self.requests is not None:
                self.requests.tick(now)  # quiet flows' pending requests time out
            self.meter.tick(now)
        self._drain_due()

    def _drain_due(self) -> None:
        """Hand buffered records/edges on at least every ``DRAIN_INTERVAL_S`` (the meter itself only
        drains when its output buffer fills, which on a live link can take minutes)."""
        now = time.monotonic()
        if now - self._last_drain >= DRAIN_INTERVAL_S:
            self._last_drain = now
            self._drain()

    def _process(self, batch: FrameBatch, source: PacketSource | None) -> None:
        allowed = self._limiter.admit(len(batch))
        if allowed < len(batch):
            self.counters.pps_limit_drops += len(batch) - allowed
            batch = _head(batch, allowed)
            if allowed == 0:
                return
        names = list(getattr(source, "interfaces", []) or [])
        if names:
            if names != self._iface_names:
                self._iface_names = names
                self._iface_ids = self._points.ids_for(names)
            ids = self._iface_ids
            idx = np.minimum(batch.interface, len(ids) - 1)
            batch = dataclasses.replace(batch, interface=ids[idx])
        self.counters.batches += 1
        self.counters.packets += len(batch)
        self.counters.wire_bytes += batch.wire_bytes
        if not self._period_ns:
            self.pipeline.feed(batch)
            return
        for part in period_slices(batch, self._period_ns):  # one piece per record period of packet time
            self.pipeline.feed(part)
            self._drain_per_period(int(part.ts_ns.max()))

    def _drain_per_period(self, ts_ns: int) -> None:
        """Drain once per record period of packet time too, just after the meter's records of the period that
        ended: a flow's request counts are bucketed by two periods at most (a fast replay reads minutes of
        packet time between two wall-clock drains)."""
        if ts_ns < self._next_period_drain_ns:
            return
        period = self._period_ns
        self._next_period_drain_ns = (ts_ns // period + 1) * period + self._period_margin_ns
        self._drain()


def _head(batch: FrameBatch, n: int) -> FrameBatch:
    return FrameBatch(
        data=batch.data,
        offset=batch.offset[:n],
        cap_len=batch.cap_len[:n],
        wire_len=batch.wire_len[:n],
        ts_ns=batch.ts_ns[:n],
        linktype=batch.linktype[:n],
        interface=batch.interface[:n],
    )


def _finite(source: PacketSource) -> bool:
    """Whether ``source`` ends (a replay): it keeps its position across pauses."""
    return bool(getattr(source, "finite", False))

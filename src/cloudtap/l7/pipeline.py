"""Capture files to request records: read -> (filter) -> decode -> fragments -> meter + requests.

The L4 meter runs on the same decoded rows (``meter=True``), so one pass gives flows and requests,
and each flow record carries the counts of the requests concluded on it (``requests``...,
docs/requests.md "Counts on flow records"); ``meter=False`` parses requests only.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cloudtap.capture.frames import FrameBatch
from cloudtap.capture.pcap_file import CaptureFile
from cloudtap.decode import DecodeConfig
from cloudtap.errors import CorruptCaptureError
from cloudtap.l7.parser import RequestConfig, RequestParser
from cloudtap.meter.config import MeterConfig
from cloudtap.meter.meter import Meter
from cloudtap.meter.pipeline import FILE_BATCH_FRAMES, FlowCollector, FramePipeline
from cloudtap.schema.flow import FLOW_DTYPE
from cloudtap.schema.request import REQ_STATUS_NAMES


@dataclass
class RequestResult:
    """Request records (ordered by request time) and what produced them."""

    requests: np.ndarray
    stats: dict[str, int]
    flows: np.ndarray = field(default_factory=lambda: np.zeros(0, FLOW_DTYPE))
    frames: int = 0
    decoded: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0
    errors: list[CorruptCaptureError] = field(default_factory=list)

    @property
    def partial(self) -> bool:
        return bool(self.errors)


class RequestPipeline(FramePipeline):
    """A :class:`FramePipeline` whose decoded rows also feed a :class:`RequestParser`.

    The parser sees the rows through the pipeline's packet-filter hook, which keeps every row.
    """

    def __init__(self, meter: Meter | None, parser: RequestParser, bpf: str | None = None,
                 decode_config: DecodeConfig | None = None) -> None:  # fmt: skip
        self.parser = parser
        self.metering = meter is not None
        super().__init__(meter or _NullMeter(), bpf, decode_config, packet_filter=self._observe)  # type: ignore[arg-type]

    def _observe(self, frames: FrameBatch, packets: np.ndarray) -> np.ndarray:
        self.parser.add(frames, packets)
        return np.ones(len(packets), bool) if self.metering else np.zeros(len(packets), bool)


class _NullMeter:
    def add(self, packets: np.ndarray) -> None:
        return None


def parse_file(
    path: str | Path | Sequence[str | Path],
    config: RequestConfig | None = None,
    bpf: str | None = None,
    meter_config: MeterConfig | None = None,
    meter: bool = False,
) -> RequestResult:
    """Parse application requests from one capture file or several (in order, as one stream).

    A corrupt file stops being read at the damage; the requests before it are kept and the error
    is listed in ``result.errors``.
    """
    paths = [Path(path)] if isinstance(path, str | Path) else [Path(p) for p in path]
    collector = FlowCollector()
    config = config or RequestConfig()
    flow_meter: Meter | None = None
    if meter:
        # Flows keyed by observation point, as the parser keys them (one flow per interface it was seen on).
        meter_config = meter_config or MeterConfig(key_by_interface=True)
        config = with_flow_counts(config, meter_config)
    parser = RequestParser(config)
    if meter:

        def on_records(records: np.ndarray) -> None:
            parser.annotate_flows(records)
            collector.on_records(records)

        flow_meter = Meter(meter_config, on_records=on_records, on_edges=collector.on_edges)
    pipeline = RequestPipeline(flow_meter, parser, bpf)
    errors: list[CorruptCaptureError] = []
    started = time.perf_counter()
    for p in paths:
        capture = CaptureFile(p)
        try:
            for batch in capture.batches(FILE_BATCH_FRAMES):
                if flow_meter is None:
                    pipeline.feed(batch)
                    continue
                for part in period_slices(batch, int(config.count_period_s * 1e9)):
                    pipeline.feed(part)
                    flow_meter.drain()  # records leave per record period: counts land in their own period
                    parser.expire_counts()
        except CorruptCaptureError as exc:
            errors.append(exc)
        finally:
            capture.close()
    parser.flush()
    if flow_meter is not None:
        flow_meter.flush()  # final records take the counts of the requests concluded by the flush above
        parser.release_counts()
    records = parser.records()
    records = records[np.argsort(records["req_ns"], kind="stable")]
    return RequestResult(
        requests=records,
        stats=parser.stats,
        flows=collector.flows(),
        frames=pipeline.frames,
        decoded=pipeline.decoded,
        elapsed_s=time.perf_counter() - started,
        errors=errors,
    )


def period_slices(batch: FrameBatch, period_ns: int) -> list[FrameBatch]:
    """``batch`` cut where its packet time enters a new record period (``ts // period_ns`` grows): fed one
    by one with the meter's records drained in between, a flow's request counts span two periods at most."""
    if period_ns <= 0 or len(batch) < 2:
        return [batch]
    period = batch.ts_ns // period_ns
    cuts = np.flatnonzero(period[1:] > np.maximum.accumulate(period)[:-1]) + 1
    if cuts.size == 0:
        return [batch]
    bounds = [0, *cuts.tolist(), len(batch)]
    return [_rows(batch, a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def _rows(batch: FrameBatch, start: int, stop: int) -> FrameBatch:
    return dataclasses.replace(
        batch,
        offset=batch.offset[start:stop],
        cap_len=batch.cap_len[start:stop],
        wire_len=batch.wire_len[start:stop],
        ts_ns=batch.ts_ns[start:stop],
        linktype=batch.linktype[start:stop],
        interface=batch.interface[start:stop],
    )


def with_flow_counts(config: RequestConfig, meter_config: MeterConfig) -> RequestConfig:
    """``config`` set up to count requests on the records of a meter of ``meter_config`` (its record
    periods and idle timeouts; counts held as long as the meter may take to send a flow's next record),
    unless set already."""
    mc = meter_config
    return dataclasses.replace(
        config,
        count_hold_s=config.count_hold_s or count_hold_for(mc),
        count_period_s=config.count_period_s or mc.record_interval_s,
        count_gap_s=config.count_gap_s or mc.idle_timeout_s,
        count_gap_tcp_s=config.count_gap_tcp_s or mc.tcp_idle_timeout_s,
    )


def count_hold_for(meter_config: MeterConfig) -> float:
    """How long a flow's request counts may wait for the meter's next record of it (seconds of packet
    time): the longest idle timeout, one record interval, the close linger and two scans."""
    mc = meter_config
    idle = max(mc.idle_timeout_s, mc.tcp_idle_timeout_s)
    return idle + mc.record_interval_s + mc.close_linger_s + 2 * mc.scan_interval_s


def request_summary(result: RequestResult) -> str:
    """One line: frames, requests by outcome, speed, and everything counted as not paired or lost."""
    statuses = (
        np.bincount(result.requests["status"], minlength=len(REQ_STATUS_NAMES))
        if len(result.requests)
        else None
    )
    parts = [f"{result.frames:,} packets", f"{len(result.requests):,} requests"]
    if statuses is not None:
        parts.append(", ".join(f"{int(n):,} {REQ_STATUS_NAMES[k]}" for k, n in enumerate(statuses) if n))
    if result.elapsed_s > 0:
        parts.append(f"{result.frames / result.elapsed_s / 1e6:.2f} Mpps")
    s = result.stats
    for key in (
        "orphan_responses",
        "queue_overflow",
        "table_full",
        "message_limit",
        "snaplen_cut",
        "flow_counts_late",
    ):
        if s.get(key):
            parts.append(f"{s[key]:,} {key.replace('_', ' ')}")
    for err in result.errors:
        parts.append(f"[bold red]partial: {err}[/]")
    return " · ".join(parts)

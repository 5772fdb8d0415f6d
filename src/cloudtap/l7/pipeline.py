"""Capture files to request records: read -> (filter) -> decode -> fragments -> meter + requests.

The L4 meter runs on the same decoded rows (``meter=True``), so one pass gives flows and requests;
``meter=False`` parses requests only.
"""

from __future__ import annotations

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
    flow_meter = (
        Meter(meter_config, on_records=collector.on_records, on_edges=collector.on_edges) if meter else None
    )
    parser = RequestParser(config)
    pipeline = RequestPipeline(flow_meter, parser, bpf)
    errors: list[CorruptCaptureError] = []
    started = time.perf_counter()
    for p in paths:
        capture = CaptureFile(p)
        try:
            for batch in capture.batches(FILE_BATCH_FRAMES):
                pipeline.feed(batch)
        except CorruptCaptureError as exc:
            errors.append(exc)
        finally:
            capture.close()
    parser.flush()
    if flow_meter is not None:
        flow_meter.flush()
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
    for key in ("orphan_responses", "queue_overflow", "table_full", "message_limit", "snaplen_cut"):
        if s.get(key):
            parts.append(f"{s[key]:,} {key.replace('_', ' ')}")
    for err in result.errors:
        parts.append(f"[bold red]partial: {err}[/]")
    return " · ".join(parts)

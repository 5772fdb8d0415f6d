"""RequestParser: decoded packets + their frames in, ``L7_DTYPE`` request records out.

It owns the per-flow state arrays (flow table, pending-request rings) and calls the numba loop
batch by batch. One parser is owned by one thread, like a :class:`~cloudtap.meter.Meter`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from cloudtap.capture.frames import FrameBatch
from cloudtap.errors import ConfigError
from cloudtap.l7._flow_counts import annotate_records, expire_counts, release_counts
from cloudtap.l7._flows import L7_FLOW_DTYPE
from cloudtap.l7._kernels import (
    P_GAP_NS,
    P_GAP_TCP_NS,
    P_HOLD_NS,
    P_IDLE_NS,
    P_PROTOS,
    P_QUEUE,
    P_SCAN_NS,
    P_SIZE,
    P_TIMEOUT_NS,
    RESERVE,
    parse_batch,
    scan,
)
from cloudtap.l7._mysql import STMT_SLOTS
from cloudtap.l7._queue import (
    ST_CLOCK,
    ST_FREE_TOP,
    ST_N_OUT,
    ST_NEXT_SCAN,
    ST_PERIOD_NS,
    ST_SIZE,
    STAT_NAMES,
)
from cloudtap.schema.flow import FLOW_DTYPE
from cloudtap.schema.packet import PACKET_DTYPE
from cloudtap.schema.request import L7_DTYPE, L7_PROTO_NAMES, RESOURCE_BYTES

RecordSink = Callable[[np.ndarray], None]
#: Every protocol the parser knows (``l7_proto`` names).
PROTOCOLS: tuple[str, ...] = tuple(name for name in L7_PROTO_NAMES if name)


@dataclass(frozen=True)
class RequestConfig:
    """Tunables of request parsing.

    Attributes:
        max_flows: flows tracked at once (each holds ``queue`` pending requests of ~300 bytes and
            ``STMT_SLOTS`` prepared MySQL statements of 160 bytes).
        queue: pending requests per flow (pipelining depth, outstanding DNS ids); when full, the
            oldest is emitted as ``unanswered`` and counted.
        timeout_s: a request with no response for this long (packet time) is emitted as ``timeout``.
        idle_s: a flow with nothing pending and no payload for this long is forgotten.
        scan_interval_s: packet time between timeout scans.
        out_rows: output buffer rows; records are handed to the sink when it fills.
        protocols: the protocols parsed (``L7_PROTO_NAMES``); flows of the others are not tracked.
        count_hold_s: 0: no flow counts. > 0: :meth:`RequestParser.annotate_flows` moves request counts
            onto flow records, and a flow holding counts is kept up to this long after its last payload
            for the meter's next record of it (then its counts are ``flow_counts_late``).
        count_period_s: the meter's ``record_interval_s``: a request is counted on the record of the period
            it concluded in (0: on the flow's next record, whatever its period).
        count_gap_s / count_gap_tcp_s: the meter's idle timeouts (``idle_timeout_s``, ``tcp_idle_timeout_s``):
            payload after such a gap belongs to a new meter flow on the same key (0: no such split).
    """

    max_flows: int = 16384
    queue: int = 8
    timeout_s: float = 30.0
    idle_s: float = 120.0
    scan_interval_s: float = 1.0
    out_rows: int = 8192
    protocols: tuple[str, ...] = PROTOCOLS
    count_hold_s: float = 0.0
    count_period_s: float = 0.0
    count_gap_s: float = 0.0
    count_gap_tcp_s: float = 0.0

    def __post_init__(self) -> None:
        if self.max_flows < 1 or self.max_flows > 1 << 24:
            raise ConfigError(f"max_flows must be in 1..{1 << 24}, got {self.max_flows}")
        if not 1 <= self.queue <= 255:
            raise ConfigError(f"queue must be in 1..255, got {self.queue}")
        if self.timeout_s <= 0 or self.idle_s <= 0 or self.scan_interval_s <= 0:
            raise ConfigError("timeout_s, idle_s and scan_interval_s must be positive")
        if self.out_rows < 4 * RESERVE + self.queue:
            raise ConfigError(f"out_rows must be at least {4 * RESERVE + self.queue}")
        unknown = sorted(set(self.protocols) - set(PROTOCOLS))
        if unknown:
            raise ConfigError(f"unknown protocol(s) {unknown}; known: {list(PROTOCOLS)}")
        if min(self.count_hold_s, self.count_period_s, self.count_gap_s, self.count_gap_tcp_s) < 0:
            raise ConfigError("count_hold_s, count_period_s, count_gap_s and count_gap_tcp_s must be >= 0")

    @property
    def memory_bytes(self) -> int:
        """Bytes a :class:`RequestParser` of this config allocates (tables, queues, output buffer)."""
        return parser_memory_bytes(self.max_flows, self.queue, self.out_rows)


def parser_memory_bytes(max_flows: int, queue: int, out_rows: int) -> int:
    """Bytes of a parser's arrays: flow table + index + free/active lists, prepared statements, pending
    requests (``queue`` per flow) and the output buffer (see :meth:`RequestParser.__init__`)."""
    index = 1 << max(4, (2 * max_flows - 1).bit_length())
    per_flow = L7_FLOW_DTYPE.itemsize + 4 + 4 + STMT_SLOTS * (8 + RESOURCE_BYTES) + queue * L7_DTYPE.itemsize
    return max_flows * per_flow + index * (4 + 4) + out_rows * L7_DTYPE.itemsize


class RequestParser:
    """Parses application requests from decoded packets, pairing responses per flow."""

    def __init__(self, config: RequestConfig | None = None, on_records: RecordSink | None = None) -> None:
        self.config = cfg = config or RequestConfig()
        self.on_records = on_records
        self._collected: list[np.ndarray] = []
        self.flows = np.zeros(cfg.max_flows, L7_FLOW_DTYPE)
        index_size = 1 << max(4, (2 * cfg.max_flows - 1).bit_length())
        self.idx_slot = np.full(index_size, -1, np.int32)
        self.idx_hash = np.zeros(index_size, np.uint32)
        self.free = np.arange(cfg.max_flows - 1, -1, -1, dtype=np.int32)
        self.active = np.zeros(cfg.max_flows, np.int32)
        self.stmt_id = np.full(cfg.max_flows * STMT_SLOTS, -1, np.int64)
        self.stmt_text = np.zeros((cfg.max_flows * STMT_SLOTS, RESOURCE_BYTES), np.uint8)
        self.pend = np.zeros(cfg.max_flows * cfg.queue, L7_DTYPE)
        self.pend_raw = self.pend.view(np.uint8).reshape(self.pend.shape[0], L7_DTYPE.itemsize)
        self.out = np.zeros(cfg.out_rows, L7_DTYPE)
        self.out_raw = self.out.view(np.uint8).reshape(cfg.out_rows, L7_DTYPE.itemsize)
        self.st = np.zeros(ST_SIZE, np.int64)
        self.st[ST_FREE_TOP] = cfg.max_flows
        self.st[ST_NEXT_SCAN] = np.iinfo(np.int64).min
        self.prm = np.zeros(P_SIZE, np.int64)
        self.prm[P_QUEUE] = cfg.queue
        self.prm[P_TIMEOUT_NS] = int(cfg.timeout_s * 1e9)
        self.prm[P_IDLE_NS] = int(cfg.idle_s * 1e9)
        self.prm[P_SCAN_NS] = int(cfg.scan_interval_s * 1e9)
        self.prm[P_HOLD_NS] = int(cfg.count_hold_s * 1e9)
        self.prm[P_GAP_NS] = int(cfg.count_gap_s * 1e9)
        self.prm[P_GAP_TCP_NS] = int(cfg.count_gap_tcp_s * 1e9)
        self.st[ST_PERIOD_NS] = int(cfg.count_period_s * 1e9)
        self.prm[P_PROTOS] = sum(1 << L7_PROTO_NAMES.index(name) for name in cfg.protocols)
        self.flow_records_matched = 0  #: flow records that carried a tracked flow's counts

    @property
    def memory_bytes(self) -> int:
        """Bytes of the arrays this parser holds."""
        arrays = (self.flows, self.idx_slot, self.idx_hash, self.free, self.active, self.stmt_id, self.stmt_text,
                  self.pend, self.out)  # fmt: skip
        return sum(a.nbytes for a in arrays)

    def add(self, frames: FrameBatch, packets: np.ndarray) -> None:
        """Parse one batch: ``packets`` are the decoded rows of ``frames`` (``frame_index`` into it)."""
        if packets.dtype != PACKET_DTYPE or packets.ndim != 1:
            raise ValueError("packets must be a 1-D PACKET_DTYPE array")
        data = np.ascontiguousarray(frames.data)
        if data.dtype != np.uint8 or data.ndim != 1:
            raise ValueError("FrameBatch.data must be a 1-D uint8 array")
        offset = np.ascontiguousarray(frames.offset, dtype=np.int64)
        if len(packets) and int(packets["frame_index"].max()) >= offset.shape[0]:
            raise ValueError("a packet's frame_index is outside its frame batch")
        if self.st[ST_CLOCK] == 0 and len(packets):
            self.st[ST_NEXT_SCAN] = int(packets["ts_ns"].min()) + self.prm[P_SCAN_NS]
        first = 0
        packets = np.ascontiguousarray(packets)
        while True:
            first = parse_batch(
                data, offset, packets, first, self.flows, self.idx_slot, self.idx_hash, self.free, self.active,
                self.pend, self.pend_raw, self.out, self.out_raw, self.st, self.prm, self.stmt_id, self.stmt_text,
            )  # fmt: skip
            if first >= len(packets):
                break
            self._drain()
        if self.st[ST_N_OUT] >= self.out.shape[0] // 2:
            self._drain()

    def flush(self) -> None:
        """End of input: emit every pending request (timed out, or unanswered) and hand records over."""
        while not scan(
            self.flows, self.idx_slot, self.idx_hash, self.free, self.active, self.pend, self.pend_raw,
            self.out, self.out_raw, self.st, self.prm, True,
        ):  # fmt: skip
            self._drain()
        self._drain()

    def tick(self, now_ns: int) -> None:
        """Advance the clock to ``now_ns`` without packets (live capture): quiet flows' requests time out."""
        if now_ns <= self.st[ST_CLOCK]:
            return
        self.st[ST_CLOCK] = now_ns
        if now_ns < self.st[ST_NEXT_SCAN]:
            return
        while not scan(
            self.flows, self.idx_slot, self.idx_hash, self.free, self.active, self.pend, self.pend_raw,
            self.out, self.out_raw, self.st, self.prm, False,
        ):  # fmt: skip
            self._drain()
        self.st[ST_NEXT_SCAN] = now_ns + self.prm[P_SCAN_NS]

    def annotate_flows(self, records: np.ndarray) -> int:
        """Move the request counts of each record's flow onto the record (``FLOW_DTYPE``, in place).

        Each record gets the requests of its flow concluded since that flow's previous record; a final
        record ends the flow here too (requests concluded after it are counted as ``flow_counts_late``).
        Returns the records that matched a flow this parser tracks.
        """
        if self.prm[P_HOLD_NS] <= 0:
            raise ValueError(
                "flow counts need RequestConfig.count_hold_s > 0 (see l7.pipeline.with_flow_counts)"
            )
        if records.dtype != FLOW_DTYPE or records.ndim != 1:
            raise ValueError("records must be a 1-D FLOW_DTYPE array")
        if not records.flags.c_contiguous or not records.flags.writeable:
            raise ValueError("records must be a contiguous, writeable array (counts are written in place)")
        matched = int(
            annotate_records(
                records, self.flows, self.idx_slot, self.idx_hash, self.free, self.active, self.st
            )
        )
        self.flow_records_matched += matched
        return matched

    def expire_counts(self) -> int:
        """Give up on counts no flow record took within ``count_hold_s`` (``flow_counts_late``).

        Call it after handing the meter's records to :meth:`annotate_flows` (the parser sees each batch
        before the meter does). Returns the requests counted late here.
        """
        hold = int(self.prm[P_HOLD_NS])
        if hold <= 0:
            return 0
        return int(
            expire_counts(self.flows, self.idx_slot, self.idx_hash, self.free, self.active, self.st, hold)
        )

    def release_counts(self) -> int:
        """End of input, after the meter's final records: counts no record took become ``flow_counts_late``
        and every idle flow is forgotten. Returns the requests counted late here."""
        return int(release_counts(self.flows, self.idx_slot, self.idx_hash, self.free, self.active, self.st))

    def drain(self) -> None:
        """Hand the records buffered so far to the sink (or the collection)."""
        self._drain()

    def _drain(self) -> None:
        n = int(self.st[ST_N_OUT])
        if n == 0:
            return
        batch = self.out[:n].copy()
        self.st[ST_N_OUT] = 0
        if self.on_records is not None:
            self.on_records(batch)
        else:
            self._collected.append(batch)

    def records(self) -> np.ndarray:
        """Records collected so far when there is no sink (drains the output buffer first)."""
        self._drain()
        out = np.concatenate(self._collected) if self._collected else np.zeros(0, L7_DTYPE)
        self._collected = []
        return out

    @property
    def stats(self) -> dict[str, int]:
        """Counters: requests, responses, orphans, timeouts, retransmissions, drops (see ``_queue.py``)."""
        skip = {"out", "clock", "next_scan", "free", "period_ns"}
        return {name: int(self.st[i]) for i, name in enumerate(STAT_NAMES) if name not in skip}

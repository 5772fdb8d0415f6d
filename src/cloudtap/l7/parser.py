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
from cloudtap.l7._flows import L7_FLOW_DTYPE
from cloudtap.l7._kernels import (
    P_IDLE_NS,
    P_QUEUE,
    P_SCAN_NS,
    P_SIZE,
    P_TIMEOUT_NS,
    RESERVE,
    parse_batch,
    scan,
)
from cloudtap.l7._mysql import STMT_SLOTS
from cloudtap.l7._queue import ST_CLOCK, ST_FREE_TOP, ST_N_OUT, ST_NEXT_SCAN, ST_SIZE, STAT_NAMES
from cloudtap.schema.packet import PACKET_DTYPE
from cloudtap.schema.request import L7_DTYPE, RESOURCE_BYTES

RecordSink = Callable[[np.ndarray], None]


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
    """

    max_flows: int = 16384
    queue: int = 8
    timeout_s: float = 30.0
    idle_s: float = 120.0
    scan_interval_s: float = 1.0
    out_rows: int = 8192

    def __post_init__(self) -> None:
        if self.max_flows < 1 or self.max_flows > 1 << 24:
            raise ConfigError(f"max_flows must be in 1..{1 << 24}, got {self.max_flows}")
        if not 1 <= self.queue <= 255:
            raise ConfigError(f"queue must be in 1..255, got {self.queue}")
        if self.timeout_s <= 0 or self.idle_s <= 0 or self.scan_interval_s <= 0:
            raise ConfigError("timeout_s, idle_s and scan_interval_s must be positive")
        if self.out_rows < 4 * RESERVE + self.queue:
            raise ConfigError(f"out_rows must be at least {4 * RESERVE + self.queue}")


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
        skip = {"out", "clock", "next_scan", "free"}
        return {name: int(self.st[i]) for i, name in enumerate(STAT_NAMES) if name not in skip}

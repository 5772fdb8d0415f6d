"""Meter: owns the flow table arrays, feeds decoded packets to the kernel, hands out records."""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from cloudtap.meter import _kernels as K
from cloudtap.meter._state import (
    CFG_EDGE_NS,
    CFG_IDLE_NS,
    CFG_KEY_INTERFACE,
    CFG_LINGER_NS,
    CFG_MAX_FLOWS,
    CFG_PERIOD_NS,
    CFG_SCAN_NS,
    CFG_SIZE,
    CFG_TCP_IDLE_NS,
    DIR_STATE_DTYPE,
    EDGE_DELTA_DTYPE,
    FLOW_STATE_DTYPE,
    ST_ACTIVE,
    ST_EDGE_N,
    ST_GROW,
    ST_NEXT_FLOW_ID,
    ST_NEXT_SCAN_NS,
    ST_NOW_NS,
    ST_OUT_N,
    ST_SIZE,
    STAT_NAMES,
)
from cloudtap.meter._table import index_rebuild
from cloudtap.meter.config import MeterConfig
from cloudtap.schema.flow import FLOW_DTYPE
from cloudtap.schema.packet import PACKET_DTYPE
from cloudtap.schema.rows import copy_rows

RecordSink = Callable[[np.ndarray], None]

_NS = 1_000_000_000


@dataclass
class MeterStats:
    """Counters of one meter (all cumulative)."""

    packets: int = 0
    metered: int = 0
    not_metered: int = 0
    table_full_packets: int = 0
    table_full_bytes: int = 0
    flows_created: int = 0
    records: int = 0
    edge_deltas: int = 0
    active_flows: int = 0
    peak_active_flows: int = 0


def _pow2_at_least(n: int) -> int:
    return 1 << max(4, (n - 1).bit_length())


def _empty_index(capacity: int) -> tuple[np.ndarray, np.ndarray]:
    size = _pow2_at_least(2 * capacity)
    return np.full(size, -1, np.int32), np.zeros(size, np.uint32)


def _return_freed_heap() -> None:
    """Hand the heap pages freed by a doubling back to the OS.

    After numpy frees a large array, glibc raises its mmap threshold to that size, so the next (smaller)
    arrays of a doubling come from the heap, and the ones they replace leave resident holes in it (~6 MiB
    at 250k flows) that only ``malloc_trim`` returns. A no-op without glibc.
    """
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


class Meter:
    """A flow table fed with decoded packets; emits flow records and edge deltas.

    Records and edge deltas are passed to ``on_records`` / ``on_edges`` in batches (numpy arrays of
    ``FLOW_DTYPE`` / ``EDGE_DELTA_DTYPE``); the arrays are copies the callee may keep.
    """

    def __init__(
        self,
        config: MeterConfig | None = None,
        on_records: RecordSink | None = None,
        on_edges: RecordSink | None = None,
    ) -> None:
        self.config = config or MeterConfig()
        cap = min(self.config.initial_flows, self.config.max_flows)
        self._fs = np.zeros(cap, FLOW_STATE_DTYPE)
        self._ds = np.zeros(2 * cap, DIR_STATE_DTYPE)
        self._idx_slot, self._idx_hash = _empty_index(cap)
        self._free = np.arange(cap - 1, -1, -1, dtype=np.int32)
        self._free_top = np.array([cap], np.int64)
        self._active = np.zeros(cap, np.int32)
        self._active_pos = np.zeros(cap, np.int32)
        self._st = np.zeros(ST_SIZE, np.int64)
        self._st[ST_NEXT_FLOW_ID] = self.config.flow_id_base
        self._cursor = np.array([-1], np.int64)
        cfg = np.zeros(CFG_SIZE, np.int64)
        cfg[CFG_IDLE_NS] = int(self.config.idle_timeout_s * _NS)
        cfg[CFG_TCP_IDLE_NS] = int(self.config.tcp_idle_timeout_s * _NS)
        cfg[CFG_LINGER_NS] = int(self.config.close_linger_s * _NS)
        cfg[CFG_PERIOD_NS] = int(self.config.record_interval_s * _NS)
        cfg[CFG_SCAN_NS] = int(self.config.scan_interval_s * _NS)
        cfg[CFG_EDGE_NS] = int(self.config.edge_interval_s * _NS)
        cfg[CFG_KEY_INTERFACE] = int(self.config.key_by_interface)
        cfg[CFG_MAX_FLOWS] = self.config.max_flows
        self._cfg = cfg
        self._out = np.zeros(self.config.output_batch, FLOW_DTYPE)
        self._edges = np.zeros(self.config.output_batch, EDGE_DELTA_DTYPE)
        self._on_records = on_records
        self._on_edges = on_edges

    # -- feeding ------------------------------------------------------------------------------
    def add(self, packets: np.ndarray) -> None:
        """Meter a batch of decoded packets (``PACKET_DTYPE``, capture order)."""
        if packets.dtype != PACKET_DTYPE:
            raise TypeError(f"expected PACKET_DTYPE packets, got {packets.dtype}")
        packets = np.ascontiguousarray(packets)
        i, n = 0, len(packets)
        while i < n:
            i = K.meter_packets(packets, i, *self._kernel_args())
            if self._st[ST_GROW]:
                self._grow()
            elif i < n or self._cursor[0] >= 0:
                self.drain()
        while self._cursor[0] >= 0:  # an interrupted scan still pending
            self.drain()
            K.meter_packets(packets[:0], 0, *self._kernel_args())

    def tick(self, now_ns: int) -> None:
        """Advance the meter's clock to ``now_ns`` without packets (live capture on a quiet link).

        Expires idle flows and emits due periodic records exactly as a packet at ``now_ns`` would.
        """
        st = self._st
        if now_ns <= st[ST_NOW_NS] and self._cursor[0] < 0:
            return
        st[ST_NOW_NS] = max(int(st[ST_NOW_NS]), now_ns)
        if self._cursor[0] < 0:
            if now_ns < st[ST_NEXT_SCAN_NS]:
                return
            scan_ns = int(self._cfg[CFG_SCAN_NS])
            st[ST_NEXT_SCAN_NS] = (now_ns // scan_ns) * scan_ns + scan_ns
            self._cursor[0] = 0
        while not K.scan(*self._scan_args(False)):
            self.drain()

    def flush(self) -> None:
        """End every active flow (end of input) and hand out everything."""
        self._cursor[0] = 0
        while not K.scan(*self._scan_args(True)):
            self.drain()
        self.drain()

    def drain(self) -> None:
        """Hand the buffered records and edge deltas to the sinks."""
        n_out = int(self._st[ST_OUT_N])
        n_edges = int(self._st[ST_EDGE_N])
        if n_out:
            if self._on_records is not None:
                self._on_records(copy_rows(self._out[:n_out]))
            self._st[ST_OUT_N] = 0
        if n_edges:
            if self._on_edges is not None:
                self._on_edges(copy_rows(self._edges[:n_edges]))
            self._st[ST_EDGE_N] = 0

    def _grow(self) -> None:
        """Double the table (up to ``max_flows``): state copied, free slots added, the index rebuilt."""
        self._st[ST_GROW] = 0
        old = self.capacity
        cap = min(2 * old, self.config.max_flows)
        fs = np.zeros(cap, FLOW_STATE_DTYPE)
        fs[:old] = self._fs
        ds = np.zeros(2 * cap, DIR_STATE_DTYPE)
        ds[: 2 * old] = self._ds
        top = int(self._free_top[0])
        free = np.empty(cap, np.int32)
        added = cap - old
        free[:added] = np.arange(cap - 1, old - 1, -1, dtype=np.int32)  # the old free slots stay on top
        free[added : added + top] = self._free[:top]
        active = np.zeros(cap, np.int32)
        active[:old] = self._active
        active_pos = np.zeros(cap, np.int32)
        active_pos[:old] = self._active_pos
        idx_slot, idx_hash = _empty_index(cap)
        index_rebuild(idx_slot, idx_hash, fs["hash"], active, int(self._st[ST_ACTIVE]))
        self._fs, self._ds, self._free, self._active, self._active_pos = fs, ds, free, active, active_pos
        self._idx_slot, self._idx_hash = idx_slot, idx_hash
        self._free_top[0] = added + top
        _return_freed_heap()

    def _scan_args(self, forced: bool) -> tuple[object, ...]:
        return (*self._kernel_args(), forced)

    def _kernel_args(self) -> tuple[object, ...]:
        return (
            self._fs,
            self._ds,
            self._idx_slot,
            self._idx_hash,
            self._free,
            self._free_top,
            self._active,
            self._active_pos,
            self._st,
            self._cfg,
            self._out,
            self._edges,
            self._cursor,
        )

    # -- introspection --------------------------------------------------------------------------
    @property
    def stats(self) -> MeterStats:
        """A snapshot of the counters."""
        values = {name: int(self._st[i]) for i, name in enumerate(STAT_NAMES)}
        return MeterStats(**values)

    @property
    def capacity(self) -> int:
        """Flow slots allocated now (grows up to ``config.max_flows``)."""
        return int(self._fs.shape[0])

    @property
    def active_flows(self) -> int:
        """Flows in the table now."""
        return int(self._st[ST_ACTIVE])

    @property
    def memory_bytes(self) -> int:
        """Bytes held by the flow table and its buffers."""
        arrays = (
            self._fs,
            self._ds,
            self._idx_slot,
            self._idx_hash,
            self._free,
            self._active,
            self._active_pos,
            self._out,
            self._edges,
        )
        return sum(a.nbytes for a in arrays)

    @property
    def bytes_per_flow_slot(self) -> float:
        """Table bytes per flow of capacity (state + index share), excluding output buffers."""
        cap = self.capacity
        table = (
            self._fs.nbytes
            + self._ds.nbytes
            + self._idx_slot.nbytes
            + self._idx_hash.nbytes
            + self._free.nbytes
            + self._active.nbytes
            + self._active_pos.nbytes
        )
        return table / cap

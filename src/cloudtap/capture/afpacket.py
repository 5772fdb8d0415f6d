"""AfPacketSource: live capture from one or more interfaces through AF_PACKET TPACKET_V3 rings.

One ``AF_PACKET``/``SOCK_RAW`` socket per interface (``packet_socket``), bound with ``ETH_P_ALL`` (both
directions), ``PACKET_VERSION = TPACKET_V3`` and a ``PACKET_RX_RING`` of ``block_count`` blocks
(``ring_config``); the kernel fills a block with many frames and hands it over when it is full or
``block_timeout_ms`` has passed. ``read()`` polls all sockets, then one numba call
(``_afpacket_kernels.walk_blocks``) describes every frame of every ready block in the FrameBatch
columns. Packet bytes are never copied.

Zero copy across rings: all rings of a source are mapped side by side into one ``RingRegion``
(``ring_memory``), so frames of several interfaces share one ``FrameBatch.data`` view and one batch is
returned per read. The region doubles (rings are mapped again at a new address) when interfaces
outnumber its slots; it is unmapped only when the source is closed and the last batch that views it
is gone.

Buffer lifetime: the blocks of a batch stay owned by cloudtap until the NEXT ``read()`` (or
``close()``), which returns them to the kernel (``TP_STATUS_KERNEL``); copy what must outlive that.
While a batch is held its blocks are unavailable to the kernel, so each read takes at most
``RingConfig.read_blocks`` blocks per ring (a quarter of the ring by default).

Filter, snaplen, fanout and link types: see ``packet_socket``.

VLAN: on receive the kernel moves an 802.1Q tag out of the frame into ``tp_vlan_tci`` (always on
the RX path, and on TX for devices with VLAN offload). The walk puts the tag back in place for free:
the 12 address bytes move 4 bytes down into the ring's padding before the frame. ``cap_len`` and
``wire_len`` then include the tag (``cap_len`` may exceed ``snaplen`` by 4). Known gap: the kernel
filter runs on the untagged frame, so ``vlan`` expressions do not match such frames (libpcap's
ancillary VLAN loads are not used by ``compile_filter``).

Timestamps are the kernel's (``tp_sec``/``tp_nsec``).
"""

from __future__ import annotations

import math
import mmap
import select
import socket
import threading
import time
from collections.abc import Sequence

import numpy as np

from cloudtap.capture import _afpacket_kernels as K
from cloudtap.capture.bpf import BpfProgram, compile_filter
from cloudtap.capture.frames import FrameBatch
from cloudtap.capture.packet_socket import (
    COUNTER_KEYS,
    DROP_ALL,
    Ring,
    attach_filter,
    capture_error,
    close_in_background,
    open_ring_socket,
    start_capture,
)
from cloudtap.capture.ring_config import RingConfig
from cloudtap.capture.ring_memory import RingRegion
from cloudtap.capture.source import SourceStats
from cloudtap.errors import CaptureError

__all__ = ["AfPacketSource", "RingConfig"]

_PAGE = mmap.PAGESIZE
_DEFAULT_CONFIG = RingConfig()

_warm = threading.Lock()
_warmed = False


def _warm_kernels() -> None:
    """Load (or compile) the ring kernels once per process, before any reader depends on them."""
    global _warmed
    with _warm:
        if _warmed:
            return
        v8 = np.zeros(_PAGE, np.uint8)
        v32 = v8.view(np.uint32)
        z64, z32, z16 = (np.zeros(1, t) for t in (np.int64, np.uint32, np.uint16))
        K.ready_blocks(v32, z64, z64, _PAGE, 1, 1, z64.copy(), z64.copy())
        outs = tuple(z.copy() for z in (z64, z32, z32, z64, z16, z16, z64, z64))
        K.walk_blocks(v8, v32, z64, z64, z64, _PAGE, 1, z16, z16, *outs)
        K.release_blocks(v32, 0, 0, 1, _PAGE, 1)
        _warmed = True


class _AlreadyCaptured(Exception):
    """Another thread added the same interface meanwhile."""


class AfPacketSource:
    """Live frames from interfaces through TPACKET_V3 rings (see the module doc).

    Thread-safe: ``add_interface``, ``remove_interface`` and ``stats`` may be called from other threads
    while one thread reads.
    """

    def __init__(self, interfaces: Sequence[str], config: RingConfig = _DEFAULT_CONFIG) -> None:
        """Open one ring per interface.

        Args:
            interfaces: interface names (may be empty; add some later with ``add_interface``).
            config: ring shape, snaplen, filter, fanout.

        Raises:
            CaptureError: not root / no CAP_NET_RAW, an interface is missing, or the kernel refuses the ring.
            FilterError: ``config.bpf`` does not compile.
        """
        self.config = config
        _warm_kernels()
        self._lock = threading.Lock()
        self._programs: dict[int, BpfProgram] = {}
        self._program(1)  # a bad expression fails here, before any socket exists
        self._rings: list[Ring] = []
        self._handed: list[tuple[Ring, int, int]] = []
        self._done: dict[str, dict[str, int]] = {}
        self._region: RingRegion | None = RingRegion(config.ring_bytes, max(4, 2 * len(interfaces)))
        self._poller: select.poll | None = None
        self._closed = False
        try:
            for name in interfaces:
                self.add_interface(name)
        except BaseException:
            self.close()
            raise

    # -- interfaces -------------------------------------------------------------------------------
    @property
    def interfaces(self) -> list[str]:
        """Interface names; ``FrameBatch.interface`` indexes this list as it is after the last read.

        A removed interface stays listed until the next ``read()``; new ones are appended.
        """
        return [r.name for r in self._rings]

    def add_interface(self, name: str) -> None:
        """Start capturing on ``name`` (no-op if already captured).

        The slow part (the kernel allocates the ring and waits for an RCU grace period) runs without
        holding the reader back; the ring joins the next ``read()``.

        Raises:
            CaptureError: as for the constructor.
        """
        with self._lock:
            self._check_open()
            if self._captured(name):
                return
        sock, ifindex, prog = open_ring_socket(name, self.config, self._program)
        try:
            with self._lock:
                self._check_open()
                if self._captured(name):
                    raise _AlreadyCaptured
                self._rings.append(self._start_ring(name, sock, ifindex, prog))
                self._poller = None
        except _AlreadyCaptured:
            sock.close()
        except BaseException:
            sock.close()
            raise

    def remove_interface(self, name: str) -> None:
        """Stop capturing on ``name`` at once; its socket and ring go at the next ``read()``.

        Raises:
            CaptureError: ``name`` is not captured.
        """
        with self._lock:
            self._check_open()
            ring = next((r for r in self._rings if r.name == name and not r.retiring), None)
            if ring is None:
                raise CaptureError(f"interface {name!r} is not captured")
            self._retire(ring)
            try:
                attach_filter(ring.sock, DROP_ALL)  # nothing more lands in the ring
            except OSError:
                pass
            self._poller = None

    def _captured(self, name: str) -> bool:
        return any(r.name == name and not r.retiring for r in self._rings)

    def _retire(self, ring: Ring) -> None:
        """Stop reading ``ring`` and bank its counters (the caller closes the socket)."""
        ring.pull_kernel_stats()
        ring.retiring = True
        done = self._done.setdefault(ring.name, dict.fromkeys(COUNTER_KEYS, 0))
        for key, value in ring.counters.items():
            done[key] += value
        ring.counters = dict.fromkeys(COUNTER_KEYS, 0)

    def _region_with_free_slot(self) -> RingRegion:
        region = self._region
        assert region is not None
        if len(self._rings) < region.slots:
            return region
        bigger = RingRegion(region.slot_size, region.slots * 2)  # old batches keep the old one alive
        for ring in self._rings:
            if not ring.retiring:
                bigger.map_ring(ring.slot, ring.sock.fileno())
        self._region = bigger
        return bigger

    def _program(self, linktype: int) -> BpfProgram:
        prog = self._programs.get(linktype)
        if prog is None:
            prog = compile_filter(self.config.bpf or "", linktype=linktype, snaplen=self.config.snaplen)
            self._programs[linktype] = prog
        return prog

    def _start_ring(self, name: str, sock: socket.socket, ifindex: int, prog: BpfProgram) -> Ring:
        """Map ``sock``'s ring into a free slot, bind, join the fanout group, filter (under the lock)."""
        region = self._region_with_free_slot()
        used = {r.slot for r in self._rings}
        slot = next(s for s in range(region.slots) if s not in used)
        mapped = False
        try:
            region.map_ring(slot, sock.fileno())
            mapped = True
            start_capture(sock, name, ifindex, self.config, prog)
        except BaseException as exc:
            if mapped:
                region.clear(slot)
            if isinstance(exc, OSError):
                raise capture_error(name, exc) from exc
            raise
        return Ring(name, sock, slot, ifindex, prog.linktype, counters=dict.fromkeys(COUNTER_KEYS, 0))

    # -- reading ----------------------------------------------------------------------------------
    def read(self, timeout_s: float = 0.1) -> FrameBatch | None:
        """Frames of every ready ring block, or None when none was ready within ``timeout_s``.

        Returns the blocks handed out by the previous call to the kernel first. One batch holds the
        frames of all rings, grouped by ring (each in kernel order, not merged by timestamp);
        ``interface`` indexes ``self.interfaces``.

        Raises:
            CaptureError: the source is closed.
        """
        with self._lock:
            self._check_open()
            self._release()
            batch = self._collect()
            if batch is not None:
                return batch
            poller = self._poller_locked()
        if poller is None:
            time.sleep(max(0.0, timeout_s))
            return None
        events = poller.poll(max(0, math.ceil(timeout_s * 1000)))
        with self._lock:
            if self._closed:
                return None
            if any(ev & select.POLLERR for _, ev in events):
                self._clear_errors({fd for fd, ev in events if ev & select.POLLERR})
            return self._collect()

    def _poller_locked(self) -> select.poll | None:
        if self._poller is None:
            active = [r for r in self._rings if not r.retiring]
            if not active:
                return None
            poller = select.poll()
            for ring in active:
                poller.register(ring.sock.fileno(), select.POLLIN | select.POLLERR)
            self._poller = poller
        return self._poller

    def _clear_errors(self, fds: set[int]) -> None:
        for ring in self._rings:
            if not ring.retiring and ring.sock.fileno() in fds:
                ring.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)  # e.g. ENETDOWN: device gone
                ring.counters["errors"] += 1

    def _release(self) -> None:
        region = self._region
        assert region is not None
        cfg = self.config
        for ring, start, count in self._handed:
            if ring.retiring:
                continue  # socket closed; its slot may already be read-only zero pages
            K.release_blocks(
                region.v32, ring.slot * region.slot_size, start, count, cfg.block_size, cfg.block_count
            )
        self._handed = []
        if any(r.retiring for r in self._rings):
            for ring in self._rings:
                if ring.retiring:
                    region.clear(ring.slot)
                    close_in_background(ring.sock)  # no poll() holds it any more
            self._rings = [r for r in self._rings if not r.retiring]

    def _collect(self) -> FrameBatch | None:
        region = self._region
        assert region is not None
        cfg = self.config
        idx = [i for i, r in enumerate(self._rings) if not r.retiring]
        if not idx:
            return None
        rings = [self._rings[i] for i in idx]
        base = np.array([r.slot * region.slot_size for r in rings], np.int64)
        cursor = np.array([r.cursor for r in rings], np.int64)
        take = np.zeros(len(rings), np.int64)
        frames = np.zeros(len(rings), np.int64)
        total = K.ready_blocks(
            region.v32, base, cursor, cfg.block_size, cfg.block_count, cfg.blocks_per_read, take, frames
        )
        if not take.any():
            return None
        n_total = int(total)
        offset = np.empty(n_total, np.int64)
        cap_len = np.empty(n_total, np.uint32)
        wire_len = np.empty(n_total, np.uint32)
        ts_ns = np.empty(n_total, np.int64)
        linktype = np.empty(n_total, np.uint16)
        interface = np.empty(n_total, np.uint16)
        ring_bytes = np.zeros(len(rings), np.int64)
        ring_vlan = np.zeros(len(rings), np.int64)
        n = K.walk_blocks(
            region.v8,
            region.v32,
            base,
            cursor,
            take,
            cfg.block_size,
            cfg.block_count,
            np.array(idx, np.uint16),
            np.array([r.linktype for r in rings], np.uint16),
            offset,
            cap_len,
            wire_len,
            ts_ns,
            linktype,
            interface,
            ring_bytes,
            ring_vlan,
        )
        for j, ring in enumerate(rings):
            count = int(take[j])
            if count:
                self._handed.append((ring, ring.cursor, count))
                ring.cursor = (ring.cursor + count) % cfg.block_count
                c = ring.counters
                c["packets"] += int(frames[j])
                c["bytes"] += int(ring_bytes[j])
                c["vlan_restored"] += int(ring_vlan[j])
        if n == 0:
            return None
        used = max(r.slot for r in self._rings) + 1
        return FrameBatch(
            data=region.view(used),
            offset=offset[:n],
            cap_len=cap_len[:n],
            wire_len=wire_len[:n],
            ts_ns=ts_ns[:n],
            linktype=linktype[:n],
            interface=interface[:n],
        )

    # -- counters and lifetime --------------------------------------------------------------------
    def stats(self) -> SourceStats:
        """Counters since the source was opened, in total and per interface name.

        ``kernel_drops`` (ring full) and ``kernel_packets`` (accepted by the filter, drops included)
        come from ``PACKET_STATISTICS``; ``freeze_q`` counts the kernel's queue freezes;
        ``vlan_restored`` the VLAN tags put back into frames. ``filter_drops`` stays 0: the kernel does
        not count packets its socket filter rejects.
        """
        with self._lock:
            per: dict[str, dict[str, int]] = {k: dict(v) for k, v in self._done.items()}
            for ring in self._rings:
                if not ring.retiring and not self._closed:
                    ring.pull_kernel_stats()
                slot = per.setdefault(ring.name, dict.fromkeys(COUNTER_KEYS, 0))
                for key, value in ring.counters.items():
                    slot[key] += value
        out = SourceStats(per_interface=per)
        for counters in per.values():
            out.packets += counters["packets"]
            out.bytes += counters["bytes"]
            out.kernel_drops += counters["kernel_drops"]
            out.filter_drops += counters["filter_drops"]
            out.errors += counters["errors"]
        return out

    def _check_open(self) -> None:
        if self._closed:
            raise CaptureError("AfPacketSource is closed")

    def close(self) -> None:
        """Return held blocks, close every socket and let the rings go; idempotent.

        The mapping itself is released when the last batch still viewing it is freed.
        """
        with self._lock:
            if self._closed:
                return
            if self._region is not None:
                self._release()
            for ring in self._rings:
                if not ring.retiring:
                    self._retire(ring)
                    ring.sock.close()
            self._rings = []
            self._poller = None
            self._region = None
            self._closed = True

    def __enter__(self) -> AfPacketSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"AfPacketSource({self.interfaces!r}, snaplen={self.config.snaplen})"

"""AfPacketSource: live capture from one or more interfaces through AF_PACKET TPACKET_V3 rings.

One ``AF_PACKET``/``SOCK_RAW`` socket per interface, bound with ``ETH_P_ALL`` (both directions),
``PACKET_VERSION = TPACKET_V3`` and a ``PACKET_RX_RING`` of ``block_count`` blocks; the kernel
fills a block with many frames and hands it over when it is full or ``block_timeout_ms`` has passed.
``read()`` polls all sockets, then one numba call (``_afpacket_kernels.walk_blocks``) describes every
frame of every ready block in the FrameBatch columns. Packet bytes are never copied.

Zero copy across rings: all rings of a source are mapped side by side into one reserved span of
address space (``mmap`` with ``MAP_FIXED`` into slots of a ``PROT_READ`` anonymous reservation), so
frames of several interfaces share one ``FrameBatch.data`` view and one batch is returned per read.
Unused slots read as zeros, never fault. The reservation doubles (rings are mapped again at a new
address) when interfaces outnumber its slots; it is unmapped only when the source is closed and the
last batch that views it is gone.

Buffer lifetime: the blocks of a batch stay owned by cloudtap until the NEXT ``read()`` (or
``close()``), which returns them to the kernel (``TP_STATUS_KERNEL``); copy what must outlive that.
While a batch is held its blocks are unavailable to the kernel, so each read takes at most
``RingConfig.read_blocks`` blocks per ring (a quarter of the ring by default).

Filter and snaplen: the socket filter compiled by libpcap for the interface's link type (``bpf``,
or the empty expression) runs in the kernel, so rejected packets never reach the ring; its accept
value is ``snaplen``, which is how the kernel cuts frames (``wire_len`` keeps the full length). A
drop-all filter is attached until the socket is bound and has joined its fanout group, so no packet
slips in unfiltered or outside the group.

Fanout: with ``fanout_group`` set, each interface's socket joins the group id
``(fanout_group + ifindex) & 0xFFFF`` (a kernel group spans one device only); sources built with the
same ``fanout_group`` on the same interfaces share each interface's packets. Mode ``"hash"`` hashes
the flow symmetrically, so both directions of a connection go to the same member.

VLAN: on receive the kernel moves an 802.1Q tag out of the frame into ``tp_vlan_tci`` (always on
the RX path, and on TX for devices with VLAN offload). The walk puts the tag back in place for free:
the 12 address bytes move 4 bytes down into the ring's padding before the frame. ``cap_len`` and
``wire_len`` then include the tag (``cap_len`` may exceed ``snaplen`` by 4). Known gap: the kernel
filter runs on the untagged frame, so ``vlan`` expressions do not match such frames (libpcap's
ancillary VLAN loads are not used by ``compile_filter``).

Link types: Ethernet and loopback devices give ``LINKTYPE_ETHERNET``; devices without a link header
(tun, ``ARPHRD_NONE``) give ``LINKTYPE_RAW``. Timestamps are the kernel's (``tp_sec``/``tp_nsec``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import math
import mmap
import os
import queue
import select
import socket
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cloudtap.capture import _afpacket_kernels as K
from cloudtap.capture.bpf import BPF_INSN_DTYPE, BpfProgram, compile_filter
from cloudtap.capture.frames import FrameBatch
from cloudtap.capture.source import SourceStats
from cloudtap.errors import CaptureError, ConfigError

SOL_PACKET = 263
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
PACKET_FANOUT = 18
TPACKET_V3 = 2
ETH_P_ALL = 3
SO_ATTACH_FILTER = 26

TPACKET3_HDRLEN = 68  #: TPACKET_ALIGN(sizeof(struct tpacket3_hdr)) + sizeof(struct sockaddr_ll)

FANOUT_MODES = {"hash": 0, "lb": 1, "cpu": 2, "rollover": 3, "rnd": 4, "random": 4, "qm": 5}
"""``fanout_mode`` names and their ``PACKET_FANOUT_*`` values."""

_ARPHRD_TO_LINKTYPE = {1: 1, 772: 1, 65534: 101}  # ether, loopback -> EN10MB; none (tun) -> RAW
_PAGE = mmap.PAGESIZE
_COUNTER_KEYS = (
    "packets",
    "bytes",
    "kernel_drops",
    "filter_drops",
    "duplicates",
    "errors",
    "kernel_packets",
    "freeze_q",
    "vlan_restored",
)


@dataclass(frozen=True)
class RingConfig:
    """Shape of each interface's TPACKET_V3 ring and what goes into it.

    Attributes:
        block_size: bytes per ring block (a multiple of the page size; a power of two wastes nothing).
        block_count: blocks per ring (ring memory = ``block_size * block_count`` per interface).
        frame_size: ``tp_frame_size`` (a multiple of 16 dividing ``block_size``; V3 frames are
            variable-sized, this only satisfies the kernel's ring arithmetic).
        snaplen: bytes kept of each frame (headers only by default).
        block_timeout_ms: a partly filled block is handed over after this long (0: kernel default).
        fanout_group: join a ``PACKET_FANOUT`` group (see the module doc); None for no fanout.
        fanout_mode: one of ``FANOUT_MODES``.
        bpf: tcpdump-syntax filter run in the kernel; None keeps everything.
        read_blocks: most blocks taken from each ring per ``read()``; None for a quarter of the ring.
    """

    block_size: int = 1 << 20
    block_count: int = 64
    frame_size: int = 2048
    snaplen: int = 256
    block_timeout_ms: int = 10
    fanout_group: int | None = None
    fanout_mode: str = "hash"
    bpf: str | None = None
    read_blocks: int | None = None

    def __post_init__(self) -> None:
        if self.block_size <= 0 or self.block_size % _PAGE:
            raise ConfigError(f"block_size {self.block_size} must be a positive multiple of {_PAGE}")
        if self.block_count < 2:
            raise ConfigError(f"block_count must be >= 2, got {self.block_count}")
        if self.frame_size < TPACKET3_HDRLEN or self.frame_size % 16 or self.block_size % self.frame_size:
            raise ConfigError(
                f"frame_size {self.frame_size} must be a multiple of 16, >= {TPACKET3_HDRLEN}, "
                f"dividing block_size {self.block_size}"
            )
        if not 1 <= self.snaplen <= 0xFFFF_FFFF:
            raise ConfigError(f"snaplen must be >= 1, got {self.snaplen}")
        if not 0 <= self.block_timeout_ms <= 0xFFFF_FFFF:
            raise ConfigError(f"block_timeout_ms must be >= 0, got {self.block_timeout_ms}")
        if self.fanout_group is not None and not 0 <= self.fanout_group <= 0xFFFF:
            raise ConfigError(f"fanout_group must be in 0..65535, got {self.fanout_group}")
        if self.fanout_mode not in FANOUT_MODES:
            raise ConfigError(f"fanout_mode {self.fanout_mode!r} is not one of {sorted(FANOUT_MODES)}")
        if self.read_blocks is not None and self.read_blocks < 1:
            raise ConfigError(f"read_blocks must be >= 1, got {self.read_blocks}")

    @property
    def ring_bytes(self) -> int:
        """Memory of one ring."""
        return self.block_size * self.block_count

    @property
    def blocks_per_read(self) -> int:
        """Most blocks taken from one ring per read."""
        return self.read_blocks if self.read_blocks is not None else max(1, self.block_count // 4)


# -- address space ---------------------------------------------------------------------------------

_PROT_READ, _PROT_WRITE = mmap.PROT_READ, mmap.PROT_WRITE
_MAP_SHARED, _MAP_PRIVATE, _MAP_ANONYMOUS = mmap.MAP_SHARED, mmap.MAP_PRIVATE, mmap.MAP_ANONYMOUS
_MAP_FIXED = 0x10
_MAP_NORESERVE = getattr(mmap, "MAP_NORESERVE", 0x4000)
_MAP_FAILED = ctypes.c_void_p(-1).value

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
]
_libc.munmap.restype = ctypes.c_int
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.setsockopt.restype = ctypes.c_int
_libc.setsockopt.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]


def _setsockopt_nogil(sock: socket.socket, level: int, opt: int, value: bytes) -> None:
    """``setsockopt`` through ctypes, which releases the GIL (CPython's does not): PACKET_RX_RING
    waits for an RCU grace period (~10-30 ms) that must not stall the reading thread."""
    if _libc.setsockopt(sock.fileno(), level, opt, value, len(value)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _mmap(addr: int | None, size: int, prot: int, flags: int, fd: int) -> int:
    got = _libc.mmap(addr, size, prot, flags, fd, 0)
    if got is None or got == _MAP_FAILED:
        err = ctypes.get_errno()
        raise OSError(err, f"mmap: {os.strerror(err)}")
    if addr is not None and got != addr:
        _libc.munmap(got, size)
        raise OSError(errno.EINVAL, "mmap: fixed mapping landed elsewhere")
    return int(got)


class _Unmapper:
    """Unmaps a reservation when the last view of it is freed."""

    def __init__(self, addr: int, size: int) -> None:
        self.addr, self.size = addr, size

    def __del__(self) -> None:
        _libc.munmap(self.addr, self.size)


class _Region:
    """A reserved span of address space with one ring-sized slot per interface."""

    def __init__(self, slot_size: int, slots: int) -> None:
        size = slot_size * slots
        flags = _MAP_PRIVATE | _MAP_ANONYMOUS | _MAP_NORESERVE
        addr = _mmap(None, size, _PROT_READ, flags, -1)
        buf_type = type("_RegionBytes", (ctypes.c_uint8 * size,), {})
        buf = buf_type.from_address(addr)
        buf.owner = _Unmapper(addr, size)  # lives as long as any numpy view of buf
        self.addr, self.slot_size, self.slots = addr, slot_size, slots
        self.v8 = np.frombuffer(buf, np.uint8)
        self.v32 = self.v8.view(np.uint32)

    def map_ring(self, slot: int, fd: int) -> None:
        """Map the ring of socket ``fd`` into ``slot``."""
        _mmap(
            self.addr + slot * self.slot_size,
            self.slot_size,
            _PROT_READ | _PROT_WRITE,
            _MAP_SHARED | _MAP_FIXED,
            fd,
        )

    def clear(self, slot: int) -> None:
        """Replace whatever is mapped in ``slot`` by zero pages (frees a ring's memory)."""
        flags = _MAP_PRIVATE | _MAP_ANONYMOUS | _MAP_FIXED | _MAP_NORESERVE
        _mmap(self.addr + slot * self.slot_size, self.slot_size, _PROT_READ, flags, -1)

    def view(self, slots_used: int) -> np.ndarray:
        """Read-only view of the first ``slots_used`` slots (what a FrameBatch holds)."""
        out = self.v8[: slots_used * self.slot_size].view()
        out.flags.writeable = False
        return out


# -- one interface ---------------------------------------------------------------------------------


@dataclass(eq=False)
class _Ring:
    name: str
    sock: socket.socket
    slot: int
    ifindex: int
    linktype: int
    cursor: int = 0
    retiring: bool = False
    counters: dict[str, int] = field(default_factory=dict)


def _drop_all() -> BpfProgram:
    insns = np.array([(0x06, 0, 0, 0)], dtype=BPF_INSN_DTYPE)  # ret #0
    return BpfProgram(expression="(drop all)", linktype=1, snaplen=0, instructions=insns)


_DROP_ALL = _drop_all()


def _attach(sock: socket.socket, prog: BpfProgram) -> None:
    fprog, keepalive = prog.as_sock_fprog()
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
    del keepalive


def _linktype(name: str) -> int:
    try:
        arphrd = int(Path(f"/sys/class/net/{name}/type").read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return 1
    lt = _ARPHRD_TO_LINKTYPE.get(arphrd)
    if lt is None:
        raise CaptureError(f"interface {name!r}: unsupported hardware type ARPHRD {arphrd}")
    return lt


class _Closer:
    """Closes packet sockets on a background thread.

    Closing a packet socket waits for RCU grace periods (~25 ms); done by the reading thread (or by
    the last holder of the file, e.g. a concurrent ``poll``) it would stall capture.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[socket.socket] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def close(self, sock: socket.socket) -> None:
        self._queue.put(sock)
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="afpacket-closer", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            self._queue.get().close()


_CLOSER = _Closer()


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
        outs = (
            z64.copy(),
            z32.copy(),
            z32.copy(),
            z64.copy(),
            z16.copy(),
            z16.copy(),
            z64.copy(),
            z64.copy(),
        )
        K.walk_blocks(v8, v32, z64, z64, z64, _PAGE, 1, z16, z16, *outs)
        K.release_blocks(v32, 0, 0, 1, _PAGE, 1)
        _warmed = True


class _AlreadyCaptured(Exception):
    """Another thread added the same interface meanwhile."""


def _capture_error(name: str, exc: OSError) -> CaptureError:
    if exc.errno in (errno.ENODEV, errno.ENXIO):
        return CaptureError(f"interface {name!r} does not exist")
    if exc.errno in (errno.EPERM, errno.EACCES):
        return CaptureError("AF_PACKET capture needs root or CAP_NET_RAW")
    return CaptureError(f"interface {name!r}: cannot set up the TPACKET_V3 ring: {exc}")


class AfPacketSource:
    """Live frames from interfaces through TPACKET_V3 rings (see the module doc).

    Thread-safe: ``add_interface``, ``remove_interface`` and ``stats`` may be called from other threads
    while one thread reads.
    """

    def __init__(self, interfaces: Sequence[str], config: RingConfig = RingConfig()) -> None:
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
        self._rings: list[_Ring] = []
        self._handed: list[tuple[_Ring, int, int]] = []
        self._done: dict[str, dict[str, int]] = {}
        self._region: _Region | None = _Region(config.ring_bytes, max(4, 2 * len(interfaces)))
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
        sock, ifindex, prog = self._prepare_socket(name)
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
                _attach(ring.sock, _DROP_ALL)  # nothing more lands in the ring
            except OSError:
                pass
            self._poller = None

    def _captured(self, name: str) -> bool:
        return any(r.name == name and not r.retiring for r in self._rings)

    def _retire(self, ring: _Ring) -> None:
        """Stop reading ``ring`` and bank its counters (the caller closes the socket)."""
        self._pull_kernel_stats(ring)
        ring.retiring = True
        done = self._done.setdefault(ring.name, dict.fromkeys(_COUNTER_KEYS, 0))
        for key, value in ring.counters.items():
            done[key] += value
        ring.counters = dict.fromkeys(_COUNTER_KEYS, 0)

    def _region_with_free_slot(self) -> _Region:
        region = self._region
        assert region is not None
        if len(self._rings) < region.slots:
            return region
        bigger = _Region(region.slot_size, region.slots * 2)  # old batches keep the old one alive
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

    def _prepare_socket(self, name: str) -> tuple[socket.socket, int, BpfProgram]:
        """An unbound packet socket with its ring allocated (and dropping everything)."""
        cfg = self.config
        try:
            ifindex = socket.if_nametoindex(name)
        except OSError as exc:
            raise CaptureError(f"interface {name!r} does not exist") from exc
        prog = self._program(_linktype(name))
        try:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # protocol 0: receives nothing yet
        except PermissionError as exc:
            raise CaptureError("AF_PACKET capture needs root or CAP_NET_RAW") from exc
        try:
            sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
            _attach(sock, _DROP_ALL)
            frame_nr = cfg.block_size // cfg.frame_size * cfg.block_count
            req = struct.pack(
                "7I", cfg.block_size, cfg.block_count, cfg.frame_size, frame_nr, cfg.block_timeout_ms, 0, 0
            )
            _setsockopt_nogil(sock, SOL_PACKET, PACKET_RX_RING, req)
        except OSError as exc:
            sock.close()
            raise _capture_error(name, exc) from exc
        except BaseException:
            sock.close()
            raise
        return sock, ifindex, prog

    def _start_ring(self, name: str, sock: socket.socket, ifindex: int, prog: BpfProgram) -> _Ring:
        """Map ``sock``'s ring into a free slot, bind, join the fanout group, filter (under the lock)."""
        cfg = self.config
        region = self._region_with_free_slot()
        used = {r.slot for r in self._rings}
        slot = next(s for s in range(region.slots) if s not in used)
        mapped = False
        try:
            region.map_ring(slot, sock.fileno())
            mapped = True
            sock.bind((name, ETH_P_ALL))
            if cfg.fanout_group is not None:
                gid = (cfg.fanout_group + ifindex) & 0xFFFF
                try:
                    sock.setsockopt(SOL_PACKET, PACKET_FANOUT, gid | FANOUT_MODES[cfg.fanout_mode] << 16)
                except OSError as exc:
                    raise CaptureError(
                        f"interface {name!r}: cannot join fanout group {gid} ({cfg.fanout_mode}): {exc}; "
                        "is the id used with another mode or device?"
                    ) from exc
            _attach(sock, prog)
            sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12)  # start counting from here
        except BaseException as exc:
            if mapped:
                region.clear(slot)
            if isinstance(exc, OSError):
                raise _capture_error(name, exc) from exc
            raise
        return _Ring(name, sock, slot, ifindex, prog.linktype, counters=dict.fromkeys(_COUNTER_KEYS, 0))

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
                    _CLOSER.close(ring.sock)  # no poll() holds it any more
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
    def _pull_kernel_stats(self, ring: _Ring) -> None:
        try:
            raw = ring.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12)
        except OSError:
            return
        packets, drops, freeze = struct.unpack("3I", raw)
        ring.counters["kernel_packets"] += packets
        ring.counters["kernel_drops"] += drops
        ring.counters["freeze_q"] += freeze

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
                    self._pull_kernel_stats(ring)
                slot = per.setdefault(ring.name, dict.fromkeys(_COUNTER_KEYS, 0))
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

"""One interface's AF_PACKET socket: its TPACKET_V3 ring, kernel filter, fanout group and counters.

Filter and snaplen: the socket filter compiled by libpcap for the interface's link type (``bpf``,
or the empty expression) runs in the kernel, so rejected packets never reach the ring; its accept
value is ``snaplen``, which is how the kernel cuts frames (``wire_len`` keeps the full length); a
program chained by ``bpf_combine.combine_programs`` returns each part's own snaplen, so the kernel cuts each
frame to the snaplen of the part (policy) that accepted it, up to the ring's largest. A
drop-all filter is attached until the socket is bound and has joined its fanout group, so no packet
slips in unfiltered or outside the group.

Fanout: with ``fanout_group`` set, each interface's socket joins the group id
``(fanout_group + ifindex) & 0xFFFF`` (a kernel group spans one device only); sources built with the
same ``fanout_group`` on the same interfaces share each interface's packets. Mode ``"hash"`` hashes
the flow symmetrically, so both directions of a connection go to the same member.

Link types: Ethernet and loopback devices give ``LINKTYPE_ETHERNET``; devices without a link header
(tun, ``ARPHRD_NONE``) give ``LINKTYPE_RAW``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import queue
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cloudtap.capture.bpf import BPF_INSN_DTYPE, BpfProgram
from cloudtap.capture.ring_config import FANOUT_MODES, RingConfig
from cloudtap.errors import CaptureError

SOL_PACKET = 263
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
PACKET_FANOUT = 18
TPACKET_V3 = 2
ETH_P_ALL = 3
SO_ATTACH_FILTER = 26

_ARPHRD_TO_LINKTYPE = {1: 1, 772: 1, 65534: 101}  # ether, loopback -> EN10MB; none (tun) -> RAW
COUNTER_KEYS = (
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

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.setsockopt.restype = ctypes.c_int
_libc.setsockopt.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]


def _setsockopt_nogil(sock: socket.socket, level: int, opt: int, value: bytes) -> None:
    """``setsockopt`` through ctypes, which releases the GIL (CPython's does not): PACKET_RX_RING
    waits for an RCU grace period (~10-30 ms) that must not stall the reading thread."""
    if _libc.setsockopt(sock.fileno(), level, opt, value, len(value)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@dataclass(eq=False)
class Ring:
    """A captured interface: its socket, the region slot its ring is mapped in, and its counters."""

    name: str
    sock: socket.socket
    slot: int
    ifindex: int
    linktype: int
    cursor: int = 0
    retiring: bool = False
    counters: dict[str, int] = field(default_factory=dict)

    def pull_kernel_stats(self) -> None:
        """Add the kernel's ``PACKET_STATISTICS`` since the last pull (which resets them) to the counters."""
        try:
            raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12)
        except OSError:
            return
        packets, drops, freeze = struct.unpack("3I", raw)
        self.counters["kernel_packets"] += packets
        self.counters["kernel_drops"] += drops
        self.counters["freeze_q"] += freeze


def _drop_all() -> BpfProgram:
    insns = np.array([(0x06, 0, 0, 0)], dtype=BPF_INSN_DTYPE)  # ret #0
    return BpfProgram(expression="(drop all)", linktype=1, snaplen=0, instructions=insns)


DROP_ALL = _drop_all()


def attach_filter(sock: socket.socket, prog: BpfProgram) -> None:
    """Attach (replace) the socket filter of ``sock``."""
    fprog, keepalive = prog.as_sock_fprog()
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
    del keepalive


def interface_linktype(name: str) -> int:
    """The link type of interface ``name`` (Ethernet when its hardware type cannot be read).

    Raises:
        CaptureError: a hardware type cloudtap does not capture.
    """
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


def close_in_background(sock: socket.socket) -> None:
    """Close a packet socket on the closer thread (the caller does not wait for the kernel)."""
    _CLOSER.close(sock)


def capture_error(name: str, exc: OSError) -> CaptureError:
    """The CaptureError that explains ``exc`` raised while setting up interface ``name``."""
    if exc.errno in (errno.ENODEV, errno.ENXIO):
        return CaptureError(f"interface {name!r} does not exist")
    if exc.errno in (errno.EPERM, errno.EACCES):
        return CaptureError("AF_PACKET capture needs root or CAP_NET_RAW")
    return CaptureError(f"interface {name!r}: cannot set up the TPACKET_V3 ring: {exc}")


def open_ring_socket(
    name: str, cfg: RingConfig, program: Callable[[int], BpfProgram]
) -> tuple[socket.socket, int, BpfProgram]:
    """An unbound packet socket with its ring allocated (and dropping everything).

    Args:
        name: the interface.
        cfg: the ring shape.
        program: the kernel filter of a link type.

    Returns:
        ``(socket, ifindex, the filter for the interface's link type)``.

    Raises:
        CaptureError: no such interface, no permission, or the kernel refuses the ring.
    """
    try:
        ifindex = socket.if_nametoindex(name)
    except OSError as exc:
        raise CaptureError(f"interface {name!r} does not exist") from exc
    prog = program(interface_linktype(name))
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # protocol 0: receives nothing yet
    except PermissionError as exc:
        raise CaptureError("AF_PACKET capture needs root or CAP_NET_RAW") from exc
    try:
        sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
        attach_filter(sock, DROP_ALL)
        frame_nr = cfg.block_size // cfg.frame_size * cfg.block_count
        req = struct.pack(
            "7I", cfg.block_size, cfg.block_count, cfg.frame_size, frame_nr, cfg.block_timeout_ms, 0, 0
        )
        _setsockopt_nogil(sock, SOL_PACKET, PACKET_RX_RING, req)
    except OSError as exc:
        sock.close()
        raise capture_error(name, exc) from exc
    except BaseException:
        sock.close()
        raise
    return sock, ifindex, prog


def start_capture(sock: socket.socket, name: str, ifindex: int, cfg: RingConfig, prog: BpfProgram) -> None:
    """Bind a socket whose ring is mapped, join its fanout group, then filter and count from here.

    Raises:
        CaptureError: the fanout group refuses the socket.
        OSError: the kernel refuses the rest.
    """
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
    attach_filter(sock, prog)
    sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12)  # start counting from here

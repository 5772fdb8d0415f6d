"""MirrorSource: receive mirrored traffic (VXLAN, GRE-TEB, ERSPAN I/II/III) on a socket.

Switches and hypervisors mirror ports by tunnelling copies of the frames to a collector: VMware
vDS "Encapsulated Remote Mirroring (L3)" and Cisco/Arista ERSPAN send GRE (ERSPAN I/II/III,
GRE-TEB), Linux/OVS/cloud mirrors often VXLAN. This source terminates those tunnels on a plain
socket, no tunnel device needed:

* ``kind="gre"`` (alias ``"erspan"``): ``socket(AF_INET, SOCK_RAW, IPPROTO_GRE)``. Linux hands
  the whole outer IPv4 packet (header + GRE) to a raw socket, so frames are the outer packets with
  ``LINKTYPE_IPV4`` (228) and the decoder opens GRE/ERSPAN itself (``tunnel_type``, and the GRE key
  or ERSPAN session id in ``tunnel_id``). An IPv6 raw socket does not deliver the IPv6 header: a
  synthetic 40-byte IPv6 header (next header 47, the real sender as source, ``bind`` as
  destination) is written in front and frames are ``LINKTYPE_IPV6`` (229). Fragmented GRE packets
  arrive reassembled.
* ``kind="vxlan"``: a UDP socket bound to ``bind:port`` delivers the VXLAN header + inner
  Ethernet frame. A synthetic outer IPv4+UDP header (28 bytes; IPv6+UDP, 48 bytes, for an IPv6
  ``bind``) is written in front: source = the real sender address and port, destination =
  ``bind`` (``0.0.0.0`` for a wildcard bind), UDP destination port always 4789, checksums 0.
  Decoding that with the default ``DecodeConfig`` yields ``tunnel_type`` VXLAN, the VNI in
  ``tunnel_id`` and the sender in ``tunnel_src``, whatever port the socket listens on. A datagram
  that is not VXLAN (I flag clear) decodes as the synthetic outer UDP packet.

Frame lengths: ``wire_len`` is the outer IP packet's length (datagram + synthetic header where
one is added); ``cap_len`` is cut at ``snaplen`` bytes of datagram (+ the synthetic header).
Timestamps are the kernel's receive time (``SO_TIMESTAMPNS``). ``kernel_drops`` is the socket's
drop counter (``SO_MEMINFO``: receive buffer full).

Receiving: every datagram lands in its own fixed slot of one preallocated buffer; up to ``batch``
datagrams are taken with a single ``recvmmsg(2)`` call (via ctypes, GIL released), falling back to
one ``recvmsg_into`` per datagram when libc has no ``recvmmsg``. Headers are filled by numpy over
the whole batch; no per-packet Python code runs on the ``recvmmsg`` path.
"""

from __future__ import annotations

import ctypes
import errno
import math
import os
import select
import socket
import struct
import time
from types import TracebackType

import numpy as np

from cloudtap.capture.frames import FrameBatch
from cloudtap.capture.mirror_config import VXLAN_PORT, MirrorConfig
from cloudtap.capture.source import SourceStats
from cloudtap.errors import CaptureError
from cloudtap.schema.packet import LINKTYPE_IPV4, LINKTYPE_IPV6

_IPPROTO_GRE = 47
_SO_TIMESTAMPNS = 35  # == SCM_TIMESTAMPNS (asm-generic and x86; 64-bit struct timespec)
_SO_RCVBUFFORCE = 33
_SO_MEMINFO = 55
_SK_MEMINFO_VARS = 9
_SK_MEMINFO_DROPS = 8
_MSG_TRUNC = 0x20
_MSG_DONTWAIT = 0x40
_MSG_CTRUNC = 0x08
_SOL_SOCKET = 1

_NAME_SIZE = 32  # sockaddr_in (16) / sockaddr_in6 (28), rounded up
_CTRL_SIZE = 64  # one SCM_TIMESTAMPNS cmsg (16 + 16), with room
_SLOT_ALIGN = 64

#: ``struct iovec`` and ``struct mmsghdr`` (x86_64 / aarch64 LP64 layout).
_IOVEC = np.dtype({"names": ["base", "len"], "formats": ["u8", "u8"], "offsets": [0, 8], "itemsize": 16})
_MMSGHDR = np.dtype(
    {
        "names": ["name", "namelen", "iov", "iovlen", "control", "controllen", "flags", "len"],
        "formats": ["u8", "u4", "u8", "u8", "u8", "u8", "i4", "u4"],
        "offsets": [0, 8, 16, 24, 32, 40, 48, 56],
        "itemsize": 64,
    }
)


def _recvmmsg() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    """libc's ``recvmmsg`` with its prototype, or None where there is none."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).recvmmsg
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
    fn.restype = ctypes.c_int
    return fn


_RECVMMSG = _recvmmsg()


class MirrorSource:
    """Mirrored frames from a VXLAN UDP socket or a raw GRE/ERSPAN socket (a ``PacketSource``)."""

    def __init__(self, config: MirrorConfig) -> None:
        """Open and bind the socket and preallocate the receive buffers.

        Args:
            config: what to receive and where.

        Raises:
            CaptureError: the socket cannot be opened or bound (raw sockets need CAP_NET_RAW).
        """
        self.config = config
        self._family = config.family
        v6 = self._family == socket.AF_INET6
        if config.kind == "vxlan":
            self._prefix = 48 if v6 else 28
        else:
            self._prefix = 40 if v6 else 0
        self._linktype = LINKTYPE_IPV6 if v6 else LINKTYPE_IPV4
        self._label = f"{config.kind}@{config.bind}" + (f":{config.port}" if config.kind == "vxlan" else "")
        self._sock = self._open_socket()
        self._closed = False
        self._stats = SourceStats()
        n, snap = config.batch, config.snaplen
        self._slot = -(-(self._prefix + snap) // _SLOT_ALIGN) * _SLOT_ALIGN
        self._buf = np.zeros(n * self._slot, np.uint8)
        self._rows = self._buf.reshape(n, self._slot)
        self._names = np.zeros((n, _NAME_SIZE), np.uint8)
        self._ctrl = np.zeros((n, _CTRL_SIZE), np.uint8)
        self._lens = np.zeros(n, np.uint32)
        self._ts = np.zeros(n, np.int64)
        offsets = np.arange(n, dtype=np.int64) * self._slot
        offsets.flags.writeable = False
        self._offsets = offsets
        self._write_header_template()
        self._use_mmsg = config.use_recvmmsg and _RECVMMSG is not None
        self._dirty = n
        if self._use_mmsg:
            self._iov = np.zeros(n, _IOVEC)
            self._iov["base"] = self._buf.ctypes.data + offsets + self._prefix
            self._iov["len"] = snap
            self._mm = np.zeros(n, _MMSGHDR)
            self._mm["name"] = self._names.ctypes.data + np.arange(n, dtype=np.uint64) * _NAME_SIZE
            self._mm["iov"] = self._iov.ctypes.data + np.arange(n, dtype=np.uint64) * _IOVEC.itemsize
            self._mm["iovlen"] = 1
            self._mm["control"] = self._ctrl.ctypes.data + np.arange(n, dtype=np.uint64) * _CTRL_SIZE
        else:
            mv = memoryview(self._buf)  # type: ignore[arg-type]
            self._views = [mv[int(o) + self._prefix : int(o) + self._prefix + snap] for o in offsets]
        self._poll = select.poll()
        self._poll.register(self._sock.fileno(), select.POLLIN)

    # --- setup ---------------------------------------------------------------------------------
    def _open_socket(self) -> socket.socket:
        cfg = self.config
        try:
            if cfg.kind == "vxlan":
                sock = socket.socket(self._family, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
                addr: tuple[str, int] = (cfg.bind, cfg.port)
            else:
                sock = socket.socket(self._family, socket.SOCK_RAW, _IPPROTO_GRE)
                addr = (cfg.bind, 0)
        except OSError as exc:
            raise CaptureError(f"mirror {self._label}: cannot open socket: {exc}") from exc
        try:
            if cfg.recv_buffer:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, cfg.recv_buffer)
                except OSError:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, cfg.recv_buffer)
            sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
            sock.setblocking(False)
            sock.bind(addr)
        except OSError as exc:
            sock.close()
            raise CaptureError(f"mirror {self._label}: cannot bind: {exc}") from exc
        return sock

    def _write_header_template(self) -> None:
        """Constant bytes of the synthetic outer header in every slot."""
        p = self._prefix
        if p == 0:
            return
        dst = socket.inet_pton(self._family, self.config.bind)
        if self._family == socket.AF_INET:
            ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 0, 0, 0x4000, 64, 17, 0, b"\0" * 4, dst)
        else:
            nh = 17 if self.config.kind == "vxlan" else _IPPROTO_GRE
            ip = struct.pack("!IHBB16s16s", 6 << 28, 0, nh, 64, b"\0" * 16, dst)
        udp = struct.pack("!HHHH", 0, VXLAN_PORT, 0, 0) if self.config.kind == "vxlan" else b""
        tmpl = np.frombuffer(ip + udp, np.uint8)
        assert tmpl.shape[0] == p
        self._rows[:, :p] = tmpl

    # --- receiving -----------------------------------------------------------------------------
    def _recv_mmsg(self) -> int:
        """One ``recvmmsg`` without waiting; datagram count (0 when none is queued)."""
        d = self._dirty
        self._mm["namelen"][:d] = _NAME_SIZE
        self._mm["controllen"][:d] = _CTRL_SIZE
        self._mm["flags"][:d] = 0
        r = _RECVMMSG(  # type: ignore[misc]
            self._sock.fileno(), self._mm.ctypes.data, self.config.batch, _MSG_DONTWAIT | _MSG_TRUNC, None
        )
        if r < 0:
            err = ctypes.get_errno()
            if err in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                return 0
            self._stats.errors += 1
            raise CaptureError(f"mirror {self._label}: recvmmsg: {os.strerror(err)}")
        self._dirty = max(r, 1)
        if r:
            self._lens[:r] = self._mm["len"][:r]
            self._ts[:r] = self._cmsg_timestamps(r)
        return int(r)

    def _cmsg_timestamps(self, n: int) -> np.ndarray:
        """Receive times from each message's SCM_TIMESTAMPNS (the first cmsg), now where absent."""
        q = self._ctrl[:n].view(np.int64)  # [cmsg_len, level|type, tv_sec, tv_nsec, ...]
        lt = self._ctrl[:n].view(np.int32)
        ok = (
            (self._mm["controllen"][:n] >= 32)
            & (q[:, 0] >= 32)
            & (lt[:, 2] == _SOL_SOCKET)
            & (lt[:, 3] == _SO_TIMESTAMPNS)
        )
        ts = q[:, 2] * 1_000_000_000 + q[:, 3]
        if not ok.all():
            ts = np.where(ok, ts, time.time_ns())
        return ts

    def _recv_each(self) -> int:
        """One ``recvmsg_into`` per datagram until the queue is empty or the batch full."""
        space = socket.CMSG_SPACE(16)
        fam = self._family
        for n in range(self.config.batch):
            try:
                size, anc, _flags, addr = self._sock.recvmsg_into([self._views[n]], space, _MSG_TRUNC)
            except (BlockingIOError, InterruptedError):
                return n
            except OSError as exc:
                self._stats.errors += 1
                if n:
                    return n
                raise CaptureError(f"mirror {self._label}: recvmsg: {exc}") from exc
            self._lens[n] = size
            ts = 0
            for level, kind, data in anc:
                if level == _SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(data) >= 16:
                    sec, nsec = struct.unpack_from("=qq", data)
                    ts = sec * 1_000_000_000 + nsec
            self._ts[n] = ts or time.time_ns()
            raw = socket.inet_pton(fam, addr[0])
            name = self._names[n]
            if fam == socket.AF_INET:
                name[4:8] = np.frombuffer(raw, np.uint8)
            else:
                name[8:24] = np.frombuffer(raw, np.uint8)
            name[2:4] = np.frombuffer(struct.pack("!H", addr[1] & 0xFFFF), np.uint8)
        return self.config.batch

    def _receive(self, timeout_s: float) -> int:
        recv = self._recv_mmsg if self._use_mmsg else self._recv_each
        n = recv()
        if n == 0 and timeout_s > 0:
            ms = max(1, math.ceil(timeout_s * 1000))
            if self._poll.poll(ms):
                n = recv()
        return n

    def _fill_headers(self, n: int, lens: np.ndarray) -> None:
        """Per-datagram bytes of the synthetic outer headers (lengths, sender address and port)."""
        rows, names = self._rows[:n], self._names[:n]
        if self._family == socket.AF_INET:  # only VXLAN gets an IPv4 header (28 bytes with UDP)
            total = np.minimum(lens + 28, 0xFFFF)
            rows[:, 2] = total >> 8
            rows[:, 3] = total & 0xFF
            rows[:, 12:16] = names[:, 4:8]
            udp = 20
        else:
            plen = np.minimum(lens + (8 if self._prefix == 48 else 0), 0xFFFF)
            rows[:, 4] = plen >> 8
            rows[:, 5] = plen & 0xFF
            rows[:, 8:24] = names[:, 8:24]
            udp = 40
        if self.config.kind == "vxlan":
            ulen = np.minimum(lens + 8, 0xFFFF)
            rows[:, udp : udp + 2] = names[:, 2:4]
            rows[:, udp + 4] = ulen >> 8
            rows[:, udp + 5] = ulen & 0xFF

    def read(self, timeout_s: float = 0.1) -> FrameBatch | None:
        """Up to ``batch`` mirrored frames, or None when none arrived within ``timeout_s``.

        Args:
            timeout_s: longest wait for the first datagram (0: do not wait).

        Returns:
            The frames (``LINKTYPE_IPV4``/``LINKTYPE_IPV6``, interface 0); its buffer is reused by
            the next ``read``.
        """
        if self._closed:
            raise CaptureError(f"mirror {self._label}: read after close")
        n = self._receive(timeout_s)
        if n == 0:
            return None
        lens = self._lens[:n].astype(np.int64)
        if self._prefix:
            self._fill_headers(n, lens)
        snap = self.config.snaplen
        cap = (np.minimum(lens, snap) + self._prefix).astype(np.uint32)
        wire = np.minimum(lens + self._prefix, 0xFFFFFFFF).astype(np.uint32)
        batch = FrameBatch(
            data=self._buf,
            offset=self._offsets[:n],
            cap_len=cap,
            wire_len=wire,
            ts_ns=self._ts[:n].copy(),
            linktype=np.full(n, self._linktype, np.uint16),
            interface=np.zeros(n, np.uint16),
        )
        nbytes = int(wire.sum(dtype=np.int64))
        self._stats.packets += n
        self._stats.bytes += nbytes
        return batch

    # --- bookkeeping ---------------------------------------------------------------------------
    def _socket_drops(self) -> int:
        try:
            raw = self._sock.getsockopt(_SOL_SOCKET, _SO_MEMINFO, 4 * _SK_MEMINFO_VARS)
        except OSError:
            return 0
        return int(struct.unpack_from(f"={_SK_MEMINFO_VARS}I", raw)[_SK_MEMINFO_DROPS])

    def stats(self) -> SourceStats:
        """Counters so far (``kernel_drops``: datagrams the socket dropped, buffer full)."""
        s = self._stats
        if not self._closed:
            s.kernel_drops = self._socket_drops()
        s.per_interface = {
            self._label: {
                "packets": s.packets,
                "bytes": s.bytes,
                "kernel_drops": s.kernel_drops,
                "filter_drops": 0,
                "duplicates": 0,
                "errors": s.errors,
            }
        }
        return SourceStats(
            packets=s.packets,
            bytes=s.bytes,
            kernel_drops=s.kernel_drops,
            filter_drops=s.filter_drops,
            duplicates=s.duplicates,
            errors=s.errors,
            per_interface={k: dict(v) for k, v in s.per_interface.items()},
        )

    @property
    def address(self) -> tuple[str, int]:
        """The bound ``(address, port)`` (port 0 for a raw GRE socket)."""
        name = self._sock.getsockname()
        return str(name[0]), int(name[1])

    def fileno(self) -> int:
        """The socket's descriptor (for an external poll loop)."""
        return self._sock.fileno()

    def close(self) -> None:
        """Close the socket; idempotent."""
        if self._closed:
            return
        self._stats.kernel_drops = self._socket_drops()
        self._closed = True
        try:
            self._poll.unregister(self._sock.fileno())
        except (KeyError, ValueError):
            pass
        self._sock.close()

    def __enter__(self) -> MirrorSource:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

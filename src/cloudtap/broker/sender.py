"""Batched sends of broker copies: one ``sendmmsg`` per batch and destination (ctypes, libc).

- VXLAN: a UDP socket (the kernel adds the outer IP/UDP headers). Runs of equal-sized copies (most copies
  at a truncation length) go as one segmented send (``UDP_SEGMENT``, up to 64 datagrams each): the kernel
  cuts them into separate datagrams, so the tool sees the same packets, for one pass through the stack.
  A path that refuses segmentation (no checksum offload) falls back to one datagram per message.
- GRE, ERSPAN II/III: a raw IP socket of protocol 47 (GRE); the kernel adds the outer IPv4/IPv6 header.
- raw: an AF_PACKET socket bound to the named interface; the copy is the frame.

A destination that is down costs counted drops (:attr:`Sender.errors`), never an exception: the capture
loop calling :meth:`Sender.send` must go on metering whatever happens to the copies.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import ipaddress
import os
import socket
from dataclasses import dataclass

import numpy as np

from cloudtap.broker import _encap_kernels as _k
from cloudtap.broker.config import Destination

IPPROTO_GRE = 47
SOL_UDP = 17
UDP_SEGMENT = 103
#: ``UIO_MAXIOV``: most messages one ``sendmmsg`` takes.
MAX_VLEN = 1024
#: UDP segmentation offload: most datagrams (``UDP_MAX_SEGMENTS``) and bytes in one send.
GSO_SEGMENTS = 64
GSO_BYTES = 65000
#: errors meaning the path cannot take segmented UDP sends (no checksum offload, MTU): stop trying them
_NO_GSO = {5, 22, 92, 95}  # EIO, EINVAL, ENOPROTOOPT, EOPNOTSUPP

# struct iovec / msghdr / mmsghdr on LP64 Linux
_IOVEC = np.dtype({"names": ["base", "len"], "formats": ["<u8", "<u8"], "offsets": [0, 8], "itemsize": 16})
_MMSGHDR = np.dtype(
    {
        "names": ["name", "namelen", "iov", "iovlen", "control", "controllen", "flags", "msg_len"],
        "formats": ["<u8", "<u4", "<u8", "<u8", "<u8", "<u8", "<i4", "<u4"],
        "offsets": [0, 8, 16, 24, 32, 40, 48, 56],
        "itemsize": 64,
    }
)

# struct cmsghdr + one u16 (CMSG_SPACE(2) = 24): the UDP_SEGMENT control message
_CMSG = np.dtype({"names": ["len", "level", "type", "gso"], "formats": ["<u8", "<i4", "<i4", "<u2"],
                  "offsets": [0, 8, 12, 16], "itemsize": 24})  # fmt: skip

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_sendmmsg = _libc.sendmmsg
_sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
_sendmmsg.restype = ctypes.c_int


@dataclass
class SendResult:
    """What one :meth:`Sender.send` did."""

    sent: int = 0
    failed: int = 0
    error: str = ""
    errno: int = 0


class Sender:
    """One destination's socket.

    Raises (constructor): OSError when the socket cannot be opened (no privilege, unknown interface); the
    broker then counts every copy to that destination as an error drop.
    """

    def __init__(self, dest: Destination) -> None:
        self.dest = dest
        self.errors = 0
        self.last_error = ""
        self._name = b""
        if dest.encap == "raw":
            sock = socket.socket(
                socket.AF_PACKET, socket.SOCK_RAW, 0
            )  # protocol 0: send only, receives nothing
            try:
                sock.bind((str(dest.interface), 0))
            except OSError:
                sock.close()
                raise
        else:
            addr = ipaddress.ip_address(str(dest.address))
            family = socket.AF_INET6 if addr.version == 6 else socket.AF_INET
            if dest.encap == "vxlan":
                sock = socket.socket(family, socket.SOCK_DGRAM)
                port = dest.port
            else:
                sock = socket.socket(family, socket.SOCK_RAW, IPPROTO_GRE)
                port = 0
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
                if dest.source is not None:
                    sock.bind((dest.source, 0))
            except OSError:
                sock.close()
                raise
            self._name = _sockaddr(addr, port)
        sock.setblocking(True)
        self.sock = sock
        #: VXLAN: send runs of equal-sized copies as one segmented UDP send (off after the first refusal)
        self.gso = dest.encap == "vxlan"
        self._name_buf = ctypes.create_string_buffer(self._name, max(len(self._name), 1))

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()

    def send(self, buffer: np.ndarray, offset: np.ndarray, length: np.ndarray) -> SendResult:
        """Send ``buffer[offset[i]:offset[i]+length[i]]`` for every i, in order (:data:`MAX_VLEN` per call).

        A failing message is retried once (the error may be an earlier ICMP error the kernel reports now);
        when it fails again the rest of the batch is dropped and counted: the destination is down.
        """
        n = int(offset.shape[0])
        result = SendResult()
        if n == 0:
            return result
        buf = np.ascontiguousarray(buffer)
        if self.gso and n > 1:
            start = np.empty(n, np.int64)
            segs = np.empty(n, np.int64)
            size = np.empty(n, np.int64)
            total = np.empty(n, np.int64)
            off = np.ascontiguousarray(offset, np.int64)
            groups = _k.gso_groups(off, np.ascontiguousarray(length, np.int64), GSO_SEGMENTS, GSO_BYTES,
                                   start, segs, size, total)  # fmt: skip
            if groups < n:
                start, segs, size, total = start[:groups], segs[:groups], size[:groups], total[:groups]
                cmsg = np.zeros(groups, _CMSG)
                cmsg["len"] = 18  # CMSG_LEN(2)
                cmsg["level"] = SOL_UDP
                cmsg["type"] = UDP_SEGMENT
                cmsg["gso"] = size
                control = cmsg.ctypes.data + np.arange(groups, dtype=np.uint64) * _CMSG.itemsize
                multi = segs > 1
                r = self._send_all(buf, off[start], total, segs, np.where(multi, control, 0),
                                   np.where(multi, _CMSG.itemsize, 0))  # fmt: skip
                if r.failed and r.errno in _NO_GSO and r.sent == 0:
                    self.gso = False  # the path refuses segmentation: plain sends from now on
                    return self.send(buffer, offset, length)
                return self._count(r)
        return self._count(self._send_all(buf, np.asarray(offset, np.int64), np.asarray(length, np.int64)))

    def _count(self, result: SendResult) -> SendResult:
        if result.failed:
            self.errors += result.failed
            self.last_error = result.error
        return result

    def _send_all(
        self,
        buf: np.ndarray,
        offset: np.ndarray,
        length: np.ndarray,
        copies: np.ndarray | None = None,
        control: np.ndarray | None = None,
        controllen: np.ndarray | None = None,
    ) -> SendResult:
        """One message per entry (``copies[i]`` copies in message i, default 1), ``sendmmsg`` in chunks."""
        n = int(offset.shape[0])
        result = SendResult()
        iov = np.empty(n, _IOVEC)
        iov["base"] = buf.ctypes.data + offset.astype(np.uint64)
        iov["len"] = length.astype(np.uint64)
        msgs = np.zeros(n, _MMSGHDR)
        if self._name:
            msgs["name"] = ctypes.addressof(self._name_buf)
            msgs["namelen"] = len(self._name)
        msgs["iov"] = iov.ctypes.data + np.arange(n, dtype=np.uint64) * _IOVEC.itemsize
        msgs["iovlen"] = 1
        if control is not None and controllen is not None:
            msgs["control"] = control
            msgs["controllen"] = controllen
        weight = np.cumsum(copies if copies is not None else np.ones(n, np.int64))
        base = msgs.ctypes.data
        fd = self.sock.fileno()
        i = 0
        retried = False
        while i < n:
            r = _sendmmsg(fd, base + i * _MMSGHDR.itemsize, min(n - i, MAX_VLEN), 0)
            if r > 0:
                i += r
                retried = False
                continue
            err = ctypes.get_errno()
            if err == 4 or not retried:  # EINTR, or a pending asynchronous error: try once more
                retried = True
                continue
            result.errno = err
            result.error = os.strerror(err)
            break
        result.sent = int(weight[i - 1]) if i else 0
        result.failed = int(weight[-1]) - result.sent
        return result


def _sockaddr(addr: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> bytes:
    """``struct sockaddr_in`` / ``sockaddr_in6`` bytes."""
    if addr.version == 4:
        return socket.AF_INET.to_bytes(2, "little") + port.to_bytes(2, "big") + addr.packed + bytes(8)
    return socket.AF_INET6.to_bytes(2, "little") + port.to_bytes(2, "big") + bytes(4) + addr.packed + bytes(4)

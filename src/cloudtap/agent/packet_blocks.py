"""Packet-store blocks: the on-disk format of a block, its index record, and the block being filled.

A block is::

    header  "CTPB" u16 version u16 0 u32 n u32 data_len i64 min_ts i64 max_ts   (32 bytes)
    ts_ns i64[n] | wire_len u32[n] | cap_len u32[n] | iface u16[n] | linktype u16[n] | pad to 8 | frames

Each block has a fixed-size index record (``INDEX_DTYPE``): where it lies (segment, offset, length),
its packet and frame-byte counts, time range, flags, interface set and a bloom filter of addresses,
ports and flow hashes.
"""

from __future__ import annotations

import struct
import time

import numpy as np

from cloudtap.agent import _packet_kernels as K
from cloudtap.errors import CloudtapError

BLOCK_MAGIC = b"CTPB"
BLOCK_VERSION = 1
BLOCK_HEADER = struct.Struct("<4sHHIIqq")
INDEX_DTYPE = np.dtype(
    [
        ("segment", "<u4"),
        ("n", "<u4"),
        ("offset", "<u8"),
        ("length", "<u8"),
        ("data_len", "<u8"),
        ("min_ts", "<i8"),
        ("max_ts", "<i8"),
        ("flags", "<u4"),
        ("reserved", "<u4"),
        ("ifaces", "<u8", (K.IFACE_WORDS,)),
        ("bloom", "<u8", (K.BLOOM_WORDS,)),
    ]
)


class OpenBlock:
    """The block being filled (frames and columns preallocated)."""

    def __init__(self, data_bytes: int) -> None:
        cap = max(16, data_bytes // 16)
        self.data = np.empty(data_bytes, np.uint8)
        self.ts = np.empty(cap, np.int64)
        self.wire = np.empty(cap, np.uint32)
        self.cap = np.empty(cap, np.uint32)
        self.iface = np.empty(cap, np.uint16)
        self.linktype = np.empty(cap, np.uint16)
        self.bloom = np.zeros(K.BLOOM_WORDS, np.uint64)
        self.ifaces = np.zeros(K.IFACE_WORDS, np.uint64)
        self.flags = 0
        self.n = 0
        self.pos = 0
        self.opened = time.monotonic()

    @property
    def room(self) -> int:
        """Rows still free."""
        return self.ts.shape[0] - self.n

    def encode(self) -> tuple[bytes, np.ndarray]:
        """The block's bytes and its index record (segment/offset filled by the writer)."""
        n = self.n
        ts = self.ts[:n]
        head = BLOCK_HEADER.pack(BLOCK_MAGIC, BLOCK_VERSION, 0, n, self.pos, int(ts.min()), int(ts.max()))
        cols = [ts.tobytes(), self.wire[:n].tobytes(), self.cap[:n].tobytes(), self.iface[:n].tobytes(),
                self.linktype[:n].tobytes()]  # fmt: skip
        used = len(head) + sum(len(c) for c in cols)
        body = b"".join([head, *cols, b"\0" * ((-used) & 7), self.data[: self.pos].tobytes()])
        rec = np.zeros(1, INDEX_DTYPE)
        rec["n"] = n
        rec["length"] = len(body)
        rec["data_len"] = self.pos
        rec["min_ts"] = int(ts.min())
        rec["max_ts"] = int(ts.max())
        rec["flags"] = self.flags
        rec["ifaces"][0] = self.ifaces
        rec["bloom"][0] = self.bloom
        return body, rec


def parse_block(buf: np.ndarray) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Split a block's bytes into ``(n, ts, wire_len, cap_len, iface, linktype, data_start)``.

    Raises:
        CloudtapError: the bytes are not a block of this format.
    """
    magic, version, _r, n, _data_len, _lo, _hi = BLOCK_HEADER.unpack_from(buf[: BLOCK_HEADER.size].tobytes())
    if magic != BLOCK_MAGIC or version != BLOCK_VERSION:
        raise CloudtapError(f"not a packet-store block (magic {magic!r}, version {version})")
    p = BLOCK_HEADER.size
    ts = buf[p : p + 8 * n].view(np.int64)
    p += 8 * n
    wire = buf[p : p + 4 * n].view(np.uint32)
    p += 4 * n
    cap = buf[p : p + 4 * n].view(np.uint32)
    p += 4 * n
    iface = buf[p : p + 2 * n].view(np.uint16)
    p += 2 * n
    lt = buf[p : p + 2 * n].view(np.uint16)
    p += 2 * n
    p += (-p) & 7
    return n, ts, wire, cap, iface, lt, p

"""Write pcapng: a Section Header, Interface Description Blocks, and batches of Enhanced Packet Blocks.

Little-endian, timestamps in nanoseconds (``if_tsresol`` = 9) so no precision is lost. Packet blocks
are written by one numba call per batch (``_pcapng_kernels.write_epbs``); Python only builds the
few header blocks.
"""

from __future__ import annotations

import struct

import numpy as np

from cloudtap.capture import _pcapng_kernels as K
from cloudtap.capture.frames import FrameBatch

SHB_TYPE = 0x0A0D0D0A
IDB_TYPE = 1
BYTE_ORDER_MAGIC = 0x1A2B3C4D
OPT_COMMENT = 1
OPT_SHB_USERAPPL = 4
OPT_IF_NAME = 2
OPT_IF_DESCRIPTION = 3
OPT_IF_TSRESOL = 9
EPB_OVERHEAD = K.EPB_OVERHEAD


def _option(code: int, value: bytes) -> bytes:
    pad = (-len(value)) & 3
    return struct.pack("<HH", code, len(value)) + value + b"\0" * pad


def _block(block_type: int, body: bytes) -> bytes:
    total = 12 + len(body)
    return struct.pack("<II", block_type, total) + body + struct.pack("<I", total)


def section_header(application: str = "cloudtap") -> bytes:
    """A Section Header Block (version 1.0, unknown section length)."""
    opts = _option(OPT_SHB_USERAPPL, application.encode()) + _option(0, b"")
    return _block(SHB_TYPE, struct.pack("<IHHq", BYTE_ORDER_MAGIC, 1, 0, -1) + opts)


def interface_block(linktype: int, name: str, description: str | None = None, snaplen: int = 0) -> bytes:
    """An Interface Description Block with ``if_name``, ``if_description`` and ns timestamps."""
    opts = _option(OPT_IF_NAME, name.encode())
    if description:
        opts += _option(OPT_IF_DESCRIPTION, description.encode())
    opts += _option(OPT_IF_TSRESOL, bytes([9])) + _option(0, b"")
    return _block(IDB_TYPE, struct.pack("<HHI", int(linktype), 0, int(snaplen)) + opts)


def epb_sizes(cap_len: np.ndarray) -> np.ndarray:
    """Bytes of the Enhanced Packet Block of each frame (``int64[n]``)."""
    return EPB_OVERHEAD + ((cap_len.astype(np.int64) + 3) & ~3)


def packet_blocks(frames: FrameBatch, if_index: np.ndarray, order: np.ndarray | None = None) -> np.ndarray:
    """Encode frames as Enhanced Packet Blocks.

    Args:
        frames: the frames.
        if_index: ``uint32[n]``, the IDB index of each frame in the output section.
        order: frames to write, in this order (default: all, in batch order).

    Returns:
        ``uint8`` array of the blocks.
    """
    sel = np.arange(len(frames), dtype=np.int64) if order is None else np.asarray(order, np.int64)
    sizes = epb_sizes(frames.cap_len[sel])
    pos = np.zeros(sel.shape[0], np.int64)
    if sel.shape[0] > 1:
        np.cumsum(sizes[:-1], out=pos[1:])
    out = np.empty(int(sizes.sum()), np.uint8)
    K.write_epbs(
        frames.data, frames.offset, frames.cap_len, frames.wire_len, frames.ts_ns,
        np.asarray(if_index, np.int64), sel, pos, out,
    )  # fmt: skip
    return out


def write_packet_blocks_at(
    frames: FrameBatch, if_index: np.ndarray, sel: np.ndarray, pos: np.ndarray, out: np.ndarray
) -> None:
    """Write frames ``sel`` at byte offsets ``pos`` of ``out`` (used to interleave several sources)."""
    K.write_epbs(
        frames.data, frames.offset, frames.cap_len, frames.wire_len, frames.ts_ns,
        np.asarray(if_index, np.int64), np.asarray(sel, np.int64), np.asarray(pos, np.int64), out,
    )  # fmt: skip

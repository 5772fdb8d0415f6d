"""Copies of frames for the broker's destinations: typed wrapper of :mod:`cloudtap.broker._encap_kernels`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cloudtap.broker import _encap_kernels as _k
from cloudtap.broker.config import Destination
from cloudtap.capture.frames import FrameBatch

KIND = {"raw": _k.RAW, "vxlan": _k.VXLAN, "gre": _k.GRE, "erspan2": _k.ERSPAN2, "erspan3": _k.ERSPAN3}
_IP_HEADER = {4: 20, 6: 40}
_MAX_HEADER = 20


def header_bytes(dest: Destination) -> int:
    """Encapsulation bytes the broker writes before the frame (the outer IP/UDP headers are the kernel's)."""
    kind = KIND[dest.encap]
    return _k.HEADER_BYTES[kind] + (_k.GRE_KEY_BYTES if kind == _k.GRE and dest.key is not None else 0)


def outer_bytes(dest: Destination) -> int:
    """Bytes the kernel adds to each copy on the underlay: IP header (+ UDP for VXLAN); 0 for raw."""
    if dest.encap == "raw":
        return 0
    return _IP_HEADER[dest.ip_version] + (8 if dest.encap == "vxlan" else 0)


def max_inner(dest: Destination) -> int:
    """Longest frame a copy may carry so its underlay packet fits ``dest.mtu`` (raw: MTU + 14)."""
    if dest.encap == "raw":
        return dest.mtu + 14
    return dest.mtu - outer_bytes(dest) - header_bytes(dest)


class DestinationTable:
    """Per-destination parameters as arrays for the kernel (index = position in the list)."""

    def __init__(self, destinations: list[Destination]) -> None:
        self.destinations = list(destinations)
        self.kind = np.array([KIND[d.encap] for d in destinations], np.uint8)
        self.vni = np.array([d.vni for d in destinations], np.uint32)
        self.key = np.array([-1 if d.key is None else d.key for d in destinations], np.int64)
        self.session = np.array([d.session_id for d in destinations], np.uint16)
        self.max_inner = np.array([max_inner(d) for d in destinations], np.int64)
        self.outer = np.array([outer_bytes(d) for d in destinations], np.int64)
        self.seq = np.zeros(len(destinations), np.uint32)


@dataclass(frozen=True, slots=True)
class Copies:
    """Copies ready to send: ``buffer[offset[i] : offset[i] + length[i]]`` goes to destination ``dest[i]``."""

    buffer: np.ndarray
    offset: np.ndarray
    length: np.ndarray
    dest: np.ndarray
    mtu_cut: np.ndarray

    def __len__(self) -> int:
        return int(self.offset.shape[0])


def build_copies(
    frames: FrameBatch,
    table: DestinationTable,
    copy_frame: np.ndarray,
    copy_dest: np.ndarray,
    copy_limit: np.ndarray,
    copy_strip: np.ndarray,
) -> Copies:
    """Build the copies (one kernel call for the whole batch).

    Args:
        frames: Ethernet frames.
        table: the destinations ``copy_dest`` indexes.
        copy_frame, copy_dest, copy_limit, copy_strip: one entry per copy (frame index, destination index,
            rule truncation with 0 = whole frame, strip VLAN tags).

    Raises:
        ValueError: arrays of different lengths, or an index out of range.
    """
    m = int(copy_frame.shape[0])
    if not (copy_dest.shape[0] == copy_limit.shape[0] == copy_strip.shape[0] == m):
        raise ValueError("copy arrays must have one entry per copy")
    if m and (int(copy_frame.max()) >= len(frames) or int(copy_frame.min()) < 0):
        raise ValueError("copy_frame indexes a frame outside the batch")
    if m and (int(copy_dest.max()) >= len(table.kind) or int(copy_dest.min()) < 0):
        raise ValueError("copy_dest indexes an unknown destination")
    cf = np.ascontiguousarray(copy_frame, np.int64)
    room = int(frames.cap_len[cf].sum(dtype=np.int64)) + _MAX_HEADER * m
    out = np.empty(max(room, 1), np.uint8)
    off = np.empty(m, np.int64)
    length = np.empty(m, np.int32)
    cut = np.empty(m, np.bool_)
    used = _k.build_copies(
        np.ascontiguousarray(frames.data), np.ascontiguousarray(frames.offset, np.int64),
        np.ascontiguousarray(frames.cap_len, np.uint32), np.ascontiguousarray(frames.wire_len, np.uint32),
        np.ascontiguousarray(frames.ts_ns, np.int64), cf, np.ascontiguousarray(copy_dest, np.int32),
        np.ascontiguousarray(copy_limit, np.int32), np.ascontiguousarray(copy_strip, np.bool_),
        table.kind, table.vni, table.key, table.session, table.max_inner, table.seq,
        out, off, length, cut,
    )  # fmt: skip
    return Copies(out[:used], off, length, np.ascontiguousarray(copy_dest, np.int32), cut)

"""Numba kernel writing pcapng Enhanced Packet Blocks (private; numpy/numba only)."""

from __future__ import annotations

import numpy as np
from numba import njit

from cloudtap._kernel_opts import KERNEL_OPTS

EPB_TYPE = 6
EPB_OVERHEAD = 32  #: block header 28 bytes + trailing length 4


@njit(**KERNEL_OPTS)
def _put32(out, p, v):  # type: ignore[no-untyped-def]
    out[p] = v & 0xFF
    out[p + 1] = (v >> 8) & 0xFF
    out[p + 2] = (v >> 16) & 0xFF
    out[p + 3] = (v >> 24) & 0xFF


@njit(**KERNEL_OPTS)
def write_epbs(data, offset, cap_len, wire_len, ts_ns, if_index, sel, pos, out):  # type: ignore[no-untyped-def]
    """Write frame ``sel[j]`` of ``data`` as a little-endian EPB at ``out[pos[j]:]`` (ns timestamps).

    Returns:
        The end offset of the last block written (0 if none).
    """
    end = 0
    for j in range(sel.shape[0]):
        i = sel[j]
        p = pos[j]
        n = np.int64(cap_len[i])
        padded = (n + 3) & ~3
        total = EPB_OVERHEAD + padded
        ts = np.uint64(ts_ns[i])
        _put32(out, p, EPB_TYPE)
        _put32(out, p + 4, total)
        _put32(out, p + 8, if_index[i])
        _put32(out, p + 12, np.int64(ts >> np.uint64(32)))
        _put32(out, p + 16, np.int64(ts & np.uint64(0xFFFFFFFF)))
        _put32(out, p + 20, n)
        _put32(out, p + 24, wire_len[i])
        s = offset[i]
        for b in range(n):
            out[p + 28 + b] = data[s + b]
        for b in range(n, padded):
            out[p + 28 + b] = 0
        _put32(out, p + 28 + padded, total)
        end = p + total
    return end

"""Numba kernel: one representative frame per flow direction (Ethernet [+ 802.1Q], IPv4 or IPv6, TCP/UDP/SCTP/
ICMP header, no payload), so a tcpdump filter can be run on stored flows. Wrapper: :mod:`.dry_run_bpf`."""

from __future__ import annotations

import numpy as np
from numba import njit

from cloudtap._kernel_opts import KERNEL_OPTS

#: bytes reserved per frame: Ethernet 14 + VLAN 4 + IPv6 40 + TCP 20
STRIDE = 80


@njit(**KERNEL_OPTS)
def _put(data: np.ndarray, at: int, value: int, width: int) -> None:
    for b in range(width):
        data[at + b] = (value >> (8 * (width - 1 - b))) & 0xFF


@njit(**KERNEL_OPTS)
def build_frames(
    src_hi: np.ndarray,
    src_lo: np.ndarray,
    dst_hi: np.ndarray,
    dst_lo: np.ndarray,
    src_port: np.ndarray,
    dst_port: np.ndarray,
    proto: np.ndarray,
    ip_ver: np.ndarray,
    vlan: np.ndarray,
    src_mac: np.ndarray,
    dst_mac: np.ndarray,
    data: np.ndarray,
    cap_len: np.ndarray,
) -> int:
    """Write frame ``i`` at ``data[i * STRIDE:]`` (``data`` zeroed, ``STRIDE * n`` bytes), its length into
    ``cap_len[i]``; addresses as 128-bit hi/lo (IPv4 mapped in ``lo``). Returns the number of frames."""
    n = src_lo.shape[0]
    for i in range(n):
        o = i * STRIDE
        _put(data, o, np.int64(dst_mac[i]), 6)
        _put(data, o + 6, np.int64(src_mac[i]), 6)
        p = o + 12
        if vlan[i] != 0:
            _put(data, p, 0x8100, 2)
            _put(data, p + 2, np.int64(vlan[i]) & 0xFFF, 2)
            p += 4
        pr = np.int64(proto[i])
        if pr == 6:
            l4 = 20
        elif pr == 17 or pr == 1 or pr == 58:
            l4 = 8
        elif pr == 132:
            l4 = 12
        else:
            l4 = 0
        if ip_ver[i] == 4:
            _put(data, p, 0x0800, 2)
            p += 2
            data[p] = 0x45
            _put(data, p + 2, 20 + l4, 2)
            data[p + 8] = 64
            data[p + 9] = pr
            _put(data, p + 12, np.int64(src_lo[i] & np.uint64(0xFFFFFFFF)), 4)
            _put(data, p + 16, np.int64(dst_lo[i] & np.uint64(0xFFFFFFFF)), 4)
            p += 20
        else:
            _put(data, p, 0x86DD, 2)
            p += 2
            data[p] = 0x60
            _put(data, p + 4, l4, 2)
            data[p + 6] = pr
            data[p + 7] = 64
            for half in range(2):
                s = src_hi[i] if half == 0 else src_lo[i]
                d = dst_hi[i] if half == 0 else dst_lo[i]
                for b in range(8):
                    shift = np.uint64(8 * (7 - b))
                    data[p + 8 + 8 * half + b] = (s >> shift) & np.uint64(0xFF)
                    data[p + 24 + 8 * half + b] = (d >> shift) & np.uint64(0xFF)
            p += 40
        if pr == 1 or pr == 58:  # ICMP: the flow's server port holds type << 8 | code
            data[p] = (np.int64(dst_port[i]) >> 8) & 0xFF
            data[p + 1] = np.int64(dst_port[i]) & 0xFF
        elif l4:
            _put(data, p, np.int64(src_port[i]), 2)
            _put(data, p + 2, np.int64(dst_port[i]), 2)
            if pr == 6:
                data[p + 12] = 0x50
                data[p + 13] = 0x10  # ACK
            elif pr == 17:
                _put(data, p + 4, 8, 2)
        cap_len[i] = p + l4 - o
    return n

"""Numba kernels that walk pcap records and pcapng blocks over a mapped capture file.

Each kernel fills preallocated per-frame arrays from ``data`` (the whole file as ``uint8``), starting at
byte ``pos``, until the arrays are full, the data ends, a block needs Python (pcapng SHB/IDB) or the
file is damaged. It returns ``(n, pos, status)``: frames written, where it stopped, and a status code
(``ST_*`` >= 0 for a clean stop, ``ERR_*`` < 0 for damage at ``pos``).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from cloudtap._kernel_opts import KERNEL_OPTS

ST_END = 0  # the data ended on a record boundary
ST_FULL = 1  # the output arrays are full
ST_BLOCK = 2  # pcapng: a Section Header or Interface Description block starts at pos

ERR_TRUNC_HEADER = -1  # the file ends inside a record or block header
ERR_TRUNC_DATA = -2  # the file ends inside a record's packet data
ERR_CAPLEN = -3  # captured length beyond any sane snapshot length
ERR_BLOCK_LEN = -4  # block total length too small or not a multiple of 4
ERR_BLOCK_EOF = -5  # block runs past the end of the file
ERR_TRAILER = -6  # trailing block total length differs from the leading one
ERR_IFACE = -7  # packet block names an interface no IDB described
ERR_CAPLEN_BLOCK = -8  # packet data does not fit in its block

SHB_TYPE = 0x0A0D0D0A
IDB_TYPE = 1
PB_TYPE = 2
SPB_TYPE = 3
EPB_TYPE = 6

_NS = np.uint64(1_000_000_000)
_POW10 = np.array([10**i for i in range(20)], dtype=np.uint64)
_MASK32 = np.uint64(0xFFFFFFFF)


@njit(**KERNEL_OPTS)
def _u16(data, p, be):
    a = np.int64(data[p])
    b = np.int64(data[p + 1])
    if be:
        return (a << 8) | b
    return a | (b << 8)


@njit(**KERNEL_OPTS)
def _u32(data, p, be):
    a = np.int64(data[p])
    b = np.int64(data[p + 1])
    c = np.int64(data[p + 2])
    d = np.int64(data[p + 3])
    if be:
        return (a << 24) | (b << 16) | (c << 8) | d
    return a | (b << 8) | (c << 16) | (d << 24)


@njit(**KERNEL_OPTS)
def ts_units_to_ns(ts, tsresol):
    """Convert a pcapng timestamp to ns since the epoch, exactly (floor).

    Args:
        ts: ``uint64`` timestamp in interface units.
        tsresol: ``if_tsresol`` byte: ``k`` for 10^-k s units, ``0x80 | k`` for 2^-k s units.

    Returns:
        ``int64`` ns (wraps for timestamps beyond year 2262).
    """
    ts = np.uint64(ts)
    if tsresol & 0x80:
        k = tsresol & 0x7F
        if k >= 64:
            sec = np.uint64(0)
            frac = ts
        else:
            sec = ts >> np.uint64(k)
            frac = ts & ((np.uint64(1) << np.uint64(k)) - np.uint64(1))
        if k <= 32:
            fns = (frac * _NS) >> np.uint64(k)
        else:
            # floor(frac * 1e9 / 2^k) without a 128-bit product: split frac in 32-bit halves.
            hi = frac >> np.uint64(32)
            lo = frac & _MASK32
            a = hi * _NS + ((lo * _NS) >> np.uint64(32))
            s = k - 32
            fns = a >> np.uint64(s) if s < 64 else np.uint64(0)
        return np.int64(sec * _NS + fns)
    k = tsresol
    if k <= 9:
        return np.int64(ts * _POW10[9 - k])
    if k - 9 > 19:
        return np.int64(0)
    return np.int64(ts // _POW10[k - 9])


@njit(**KERNEL_OPTS)
def scan_pcap(data, pos, end, be, rec_hdr_len, ts_mult, max_caplen, offset, cap_len, wire_len, ts_ns):
    """Walk classic pcap records.

    Args:
        data: ``uint8`` file bytes.
        pos: offset of the first record header.
        end: end of the data (file size).
        be: records are big-endian.
        rec_hdr_len: record header bytes (16, or 24 for the modified/Kuznetzov format).
        ts_mult: ns per sub-second unit (1000 for µs files, 1 for ns files).
        max_caplen: largest captured length accepted.
        offset, cap_len, wire_len, ts_ns: output arrays (their length is the batch capacity).

    Returns:
        ``(n, pos, status)``.
    """
    cap = offset.shape[0]
    n = 0
    while n < cap:
        if pos >= end:
            return n, pos, ST_END
        if pos + rec_hdr_len > end:
            return n, pos, ERR_TRUNC_HEADER
        sec = _u32(data, pos, be)
        frac = _u32(data, pos + 4, be)
        cl = _u32(data, pos + 8, be)
        wl = _u32(data, pos + 12, be)
        if cl > max_caplen:
            return n, pos, ERR_CAPLEN
        start = pos + rec_hdr_len
        if start + cl > end:
            return n, pos, ERR_TRUNC_DATA
        offset[n] = start
        cap_len[n] = cl
        wire_len[n] = wl
        ts_ns[n] = sec * 1_000_000_000 + frac * ts_mult
        n += 1
        pos = start + cl
    if pos >= end:
        return n, pos, ST_END
    return n, pos, ST_FULL


@njit(**KERNEL_OPTS)
def scan_pcapng(
    data,
    pos,
    end,
    be,
    if_base,
    if_linktype,
    if_snaplen,
    if_maxcap,
    if_tsresol,
    if_tsoff_ns,
    n,
    offset,
    cap_len,
    wire_len,
    ts_ns,
    linktype,
    interface,
):
    """Walk pcapng blocks of one section: EPB/SPB/PB become frames, other blocks are skipped.

    Stops with ``ST_BLOCK`` at a Section Header or Interface Description block for Python to parse.

    Args:
        data: ``uint8`` file bytes.
        pos: offset of a block start.
        end: end of the data (file size).
        be: the current section is big-endian.
        if_base: global index of the section's first interface.
        if_linktype, if_snaplen, if_maxcap, if_tsresol, if_tsoff_ns: per-interface (section-local
            index) linktype, IDB snaplen (0 = none), max accepted caplen, ``if_tsresol`` byte and
            ``if_tsoffset`` in ns.
        n: first output slot to fill.
        offset, cap_len, wire_len, ts_ns, linktype, interface: output arrays.

    Returns:
        ``(n, pos, status)`` with ``n`` the next free output slot.
    """
    cap = offset.shape[0]
    n_if = if_linktype.shape[0]
    while n < cap:
        if pos >= end:
            return n, pos, ST_END
        if pos + 12 > end:
            return n, pos, ERR_TRUNC_HEADER
        btype = _u32(data, pos, be)
        if btype == SHB_TYPE or btype == IDB_TYPE:
            return n, pos, ST_BLOCK
        blen = _u32(data, pos + 4, be)
        if blen < 12 or (blen & 3) != 0:
            return n, pos, ERR_BLOCK_LEN
        if pos + blen > end:
            return n, pos, ERR_BLOCK_EOF
        if _u32(data, pos + blen - 4, be) != blen:
            return n, pos, ERR_TRAILER
        if btype == EPB_TYPE or btype == PB_TYPE:
            if blen < 32:
                return n, pos, ERR_BLOCK_LEN
            if btype == EPB_TYPE:
                iface = _u32(data, pos + 8, be)
            else:
                iface = _u16(data, pos + 8, be)
            if iface >= n_if:
                return n, pos, ERR_IFACE
            ts = (np.uint64(_u32(data, pos + 12, be)) << np.uint64(32)) | np.uint64(_u32(data, pos + 16, be))
            cl = _u32(data, pos + 20, be)
            wl = _u32(data, pos + 24, be)
            if cl > if_maxcap[iface]:
                return n, pos, ERR_CAPLEN
            if 32 + cl > blen:
                return n, pos, ERR_CAPLEN_BLOCK
            offset[n] = pos + 28
            cap_len[n] = cl
            wire_len[n] = wl
            ts_ns[n] = ts_units_to_ns(ts, if_tsresol[iface]) + if_tsoff_ns[iface]
            linktype[n] = if_linktype[iface]
            interface[n] = if_base + iface
            n += 1
        elif btype == SPB_TYPE:
            if blen < 16:
                return n, pos, ERR_BLOCK_LEN
            if n_if == 0:
                return n, pos, ERR_IFACE
            wl = _u32(data, pos + 8, be)
            cl = wl
            snap = if_snaplen[0]
            if snap != 0 and cl > snap:
                cl = snap
            if cl > if_maxcap[0]:
                return n, pos, ERR_CAPLEN
            if 16 + cl > blen:
                return n, pos, ERR_CAPLEN_BLOCK
            offset[n] = pos + 12
            cap_len[n] = cl
            wire_len[n] = wl
            ts_ns[n] = 0
            linktype[n] = if_linktype[0]
            interface[n] = if_base
            n += 1
        pos += blen
    if pos >= end:
        return n, pos, ST_END
    return n, pos, ST_FULL

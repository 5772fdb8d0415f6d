"""Numba kernels that walk pcap records and pcapng blocks over a mapped capture file.

Each kernel fills preallocated per-frame arrays from ``data`` (the whole file as ``uint8``), starting at
byte ``pos``, until the arrays are full, the data ends, a block needs Python (pcapng SHB/IDB) or the
file is damaged. It returns ``(n, pos, status)``: frames written, where it stopped, and a status code
(``ST_*`` >= 0 for a clean stop, ``ERR_*`` < 0 for damage at ``pos``).

Walking records is a dependent chain (the next offset needs this record's length), so on a file that
is not in the CPU caches every record would cost a full DRAM (and page-fault) latency. The kernels
therefore pre-read the file sequentially ahead of the walk, one byte per cache line over
``PREREAD_BLOCK`` bytes at a time, keeping ``PREREAD_AHEAD`` bytes in front of it: those independent
loads fault the pages in and let the hardware prefetcher stream at memory bandwidth, and the walk
(and the decoder right after it) then hit the cache. ``stream`` carries the pre-read front between
calls: ``stream[0]`` is the file offset pre-read up to, ``stream[1]`` a checksum of the bytes read
(kept so the compiler cannot drop the loads).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from cloudtap._kernel_opts import NO_ALLOC_OPTS

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

#: Order of the two length fields of a pcap record header (``scan_pcap``'s ``lengths``).
LENGTHS_NORMAL = 0  # captured length, then wire length (pcap 2.4 and later)
LENGTHS_SWAPPED = 1  # wire length first (pcap 2.0-2.2, and major version 543)
LENGTHS_MAYBE_SWAPPED = 2  # pcap 2.3: swapped when the "captured" length exceeds the wire length

SHB_TYPE = 0x0A0D0D0A
IDB_TYPE = 1
PB_TYPE = 2
SPB_TYPE = 3
EPB_TYPE = 6

_NS = np.uint64(1_000_000_000)
_POW10 = np.array([10**i for i in range(20)], dtype=np.uint64)
_MASK32 = np.uint64(0xFFFFFFFF)

PREREAD_AHEAD = 256 * 1024  # bytes kept pre-read in front of the walk (well inside L2)
PREREAD_BLOCK = 64 * 1024  # bytes pre-read at a time
_LINE = 64  # cache line bytes: every line must be touched, the prefetcher does not fill strided gaps


@njit(**NO_ALLOC_OPTS)
def _u16(data, p, be):
    a = np.int64(data[p])
    b = np.int64(data[p + 1])
    if be:
        return (a << 8) | b
    return a | (b << 8)


@njit(**NO_ALLOC_OPTS)
def _u32(data, p, be):
    a = np.int64(data[p])
    b = np.int64(data[p + 1])
    c = np.int64(data[p + 2])
    d = np.int64(data[p + 3])
    if be:
        return (a << 24) | (b << 16) | (c << 8) | d
    return a | (b << 8) | (c << 16) | (d << 24)


@njit(**NO_ALLOC_OPTS)
def _touch_lines(data, start, stop):
    """Read one byte per cache line of ``data[start:stop]``; return their sum."""
    acc = np.int64(0)
    for p in range(start, stop, _LINE):
        acc += data[p]
    return acc


@njit(**NO_ALLOC_OPTS)
def _preread_stop(pos, end, front):
    """End of the next block to pre-read when the walk is at ``pos`` (``front`` if none is due yet)."""
    if pos + PREREAD_AHEAD <= front or front >= end:
        return front
    return min(max(front, pos) + PREREAD_BLOCK, end)


@njit(**NO_ALLOC_OPTS)
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


@njit(**NO_ALLOC_OPTS)
def scan_pcap(
    data, pos, end, be, rec_hdr_len, ts_mult, max_caplen, stream, offset, cap_len, wire_len, ts_ns, lengths=0
):
    """Walk classic pcap records.

    Args:
        data: ``uint8`` file bytes.
        pos: offset of the first record header.
        end: end of the data (file size).
        be: records are big-endian.
        rec_hdr_len: record header bytes (16, or 24 for the modified/Kuznetzov format).
        ts_mult: ns per sub-second unit (1000 for µs files, 1 for ns files).
        max_caplen: largest captured length accepted.
        stream: ``int64[2]`` pre-read state carried between calls (see the module docstring).
        offset, cap_len, wire_len, ts_ns: output arrays (their length is the batch capacity).
        lengths: ``LENGTHS_*``, the order of the length fields (old versions swap them, as
            libpcap and Wireshark read them).

    Returns:
        ``(n, pos, status)``.
    """
    cap = offset.shape[0]
    n = 0
    status = ST_FULL
    front = stream[0]  # in locals: reading and writing ``stream`` per record measured ~35% slower
    acc = stream[1]
    while n < cap:
        if pos >= end:
            status = ST_END
            break
        stop = _preread_stop(pos, end, front)
        if stop != front:
            acc += _touch_lines(data, max(front, pos), stop)
            front = stop
        if pos + rec_hdr_len > end:
            status = ERR_TRUNC_HEADER
            break
        sec = _u32(data, pos, be)
        frac = _u32(data, pos + 4, be)
        cl = _u32(data, pos + 8, be)
        wl = _u32(data, pos + 12, be)
        if lengths != LENGTHS_NORMAL and (lengths == LENGTHS_SWAPPED or cl > wl):
            cl, wl = wl, cl
        if cl > max_caplen:
            status = ERR_CAPLEN
            break
        start = pos + rec_hdr_len
        if start + cl > end:
            status = ERR_TRUNC_DATA
            break
        offset[n] = start
        cap_len[n] = cl
        wire_len[n] = wl
        ts_ns[n] = sec * 1_000_000_000 + frac * ts_mult
        n += 1
        pos = start + cl
    stream[0] = front
    stream[1] = acc
    if status == ST_FULL and pos >= end:
        status = ST_END
    return n, pos, status


@njit(**NO_ALLOC_OPTS)
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
    stream,
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
        stream: ``int64[2]`` pre-read state carried between calls (see the module docstring).
        n: first output slot to fill.
        offset, cap_len, wire_len, ts_ns, linktype, interface: output arrays.

    Returns:
        ``(n, pos, status)`` with ``n`` the next free output slot.
    """
    cap = offset.shape[0]
    n_if = if_linktype.shape[0]
    status = ST_FULL
    front = stream[0]
    acc = stream[1]
    while n < cap:
        if pos >= end:
            status = ST_END
            break
        stop = _preread_stop(pos, end, front)
        if stop != front:
            acc += _touch_lines(data, max(front, pos), stop)
            front = stop
        if pos + 12 > end:
            status = ERR_TRUNC_HEADER
            break
        btype = _u32(data, pos, be)
        if btype == SHB_TYPE or btype == IDB_TYPE:
            status = ST_BLOCK
            break
        blen = _u32(data, pos + 4, be)
        if blen < 12 or (blen & 3) != 0:
            status = ERR_BLOCK_LEN
            break
        if pos + blen > end:
            status = ERR_BLOCK_EOF
            break
        if _u32(data, pos + blen - 4, be) != blen:
            status = ERR_TRAILER
            break
        if btype == EPB_TYPE or btype == PB_TYPE:
            if blen < 32:
                status = ERR_BLOCK_LEN
                break
            if btype == EPB_TYPE:
                iface = _u32(data, pos + 8, be)
            else:
                iface = _u16(data, pos + 8, be)
            if iface >= n_if:
                status = ERR_IFACE
                break
            ts = (np.uint64(_u32(data, pos + 12, be)) << np.uint64(32)) | np.uint64(_u32(data, pos + 16, be))
            cl = _u32(data, pos + 20, be)
            wl = _u32(data, pos + 24, be)
            if cl > if_maxcap[iface]:
                status = ERR_CAPLEN
                break
            if 32 + cl > blen:
                status = ERR_CAPLEN_BLOCK
                break
            offset[n] = pos + 28
            cap_len[n] = cl
            wire_len[n] = wl
            ts_ns[n] = ts_units_to_ns(ts, if_tsresol[iface]) + if_tsoff_ns[iface]
            linktype[n] = if_linktype[iface]
            interface[n] = if_base + iface
            n += 1
        elif btype == SPB_TYPE:
            if blen < 16:
                status = ERR_BLOCK_LEN
                break
            if n_if == 0:
                status = ERR_IFACE
                break
            wl = _u32(data, pos + 8, be)
            cl = wl
            snap = if_snaplen[0]
            if snap != 0 and cl > snap:
                cl = snap
            if cl > if_maxcap[0]:
                status = ERR_CAPLEN
                break
            if 16 + cl > blen:
                status = ERR_CAPLEN_BLOCK
                break
            offset[n] = pos + 12
            cap_len[n] = cl
            wire_len[n] = wl
            ts_ns[n] = 0
            linktype[n] = if_linktype[0]
            interface[n] = if_base
            n += 1
        pos += blen
    stream[0] = front
    stream[1] = acc
    if status == ST_FULL and pos >= end:
        status = ST_END
    return n, pos, status

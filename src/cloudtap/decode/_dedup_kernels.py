# mypy: disable-error-code="no-untyped-def, assignment"
"""Numba kernels of the mirror deduplicator: fingerprint the inner packet, look it up in a cache.

The cache is set-associative: ``fp`` and ``ts`` hold ``n_sets * WAYS`` entries; a fingerprint
lives in one set of ``WAYS`` consecutive slots (one cache line of ``fp``). An empty slot has
fingerprint 0 and slots are never emptied again, so a lookup stops at the first empty slot. A new
fingerprint takes the first empty slot of its set, else the slot with the oldest timestamp.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from cloudtap._kernel_opts import KERNEL_OPTS, NO_ALLOC_OPTS

#: Slots per set (8 x 8-byte fingerprints = one 64-byte cache line).
WAYS = 8
#: Most frame bytes hashed from the start of the L4 header (checksum bytes skipped).
HASH_BYTES = 48

_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xBF58476D1CE4E5B9)
_M3 = np.uint64(0x94D049BB133111EB)
_S32 = np.uint64(32)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S8 = np.uint64(8)
_LEAF = NO_ALLOC_OPTS


@njit(**_LEAF)
def _step(h, v):
    """Fold the word ``v`` into ``h``: a bijection of ``h`` for each ``v`` (one multiply deep)."""
    z = (h ^ v) * _M1
    return z ^ (z >> _S32)


@njit(**_LEAF)
def _finish(h):
    """splitmix64 finaliser."""
    z = (h ^ (h >> _S30)) * _M2
    z = (z ^ (z >> _S27)) * _M3
    return z ^ (z >> _S31)


@njit(**_LEAF)
def _u64_at(data, q):
    """8 bytes at ``q``, big-endian (bounds checked by the caller)."""
    return (
        (np.uint64(data[q]) << np.uint64(56))
        | (np.uint64(data[q + 1]) << np.uint64(48))
        | (np.uint64(data[q + 2]) << np.uint64(40))
        | (np.uint64(data[q + 3]) << np.uint64(32))
        | (np.uint64(data[q + 4]) << np.uint64(24))
        | (np.uint64(data[q + 5]) << np.uint64(16))
        | (np.uint64(data[q + 6]) << np.uint64(8))
        | np.uint64(data[q + 7])
    )


@njit(**_LEAF)
def _checksum_word(proto):
    """(8-byte word index, AND mask) blanking the L4 checksum; index -1 when there is none."""
    if proto == 6:  # TCP: bytes 16-17
        return 2, ~(np.uint64(0xFFFF) << np.uint64(48))
    if proto == 17 or proto == 136:  # UDP, UDP-Lite: bytes 6-7
        return 0, ~np.uint64(0xFFFF)
    if proto == 1 or proto == 58:  # ICMP, ICMPv6: bytes 2-3
        return 0, ~(np.uint64(0xFFFF) << np.uint64(32))
    if proto == 132:  # SCTP CRC32c: bytes 8-11
        return 1, ~(np.uint64(0xFFFFFFFF) << np.uint64(32))
    return -1, ~np.uint64(0)


@njit(**KERNEL_OPTS)
def fingerprint(data, start, end, rec):
    """64-bit fingerprint of the innermost packet of ``rec`` (never 0).

    Row fields: addresses, protocol, ports, TCP seq/ack/flags/window, ICMP type, IP id, IP length,
    payload length, fragment offset; then up to ``HASH_BYTES`` frame bytes from the L4 header,
    L4 checksum blanked, never past the end of the innermost IP packet (``data[start:end]`` is the
    captured frame). TTL/hop limit, IP checksum, DSCP/ECN and every outer header are left out.
    """
    h = _M3
    h = _step(h, rec.src_hi)
    h = _step(h, rec.src_lo)
    h = _step(h, rec.dst_hi)
    h = _step(h, rec.dst_lo)
    w = (
        np.uint64(rec.proto)
        | (np.uint64(rec.sport) << np.uint64(8))
        | (np.uint64(rec.dport) << np.uint64(24))
        | (np.uint64(rec.tcp_flags) << np.uint64(40))
        | (np.uint64(rec.icmp_type) << np.uint64(48))
        | (np.uint64(rec.ip_ver) << np.uint64(56))
    )
    h = _step(h, w)
    h = _step(h, np.uint64(rec.tcp_seq) | (np.uint64(rec.tcp_ack) << _S32))
    h = _step(h, np.uint64(rec.frag_id) | (np.uint64(rec.ip_len) << _S32))
    h = _step(
        h,
        np.uint64(rec.payload_len)
        | (np.uint64(rec.frag_offset) << _S32)
        | (np.uint64(rec.tcp_win) << np.uint64(48)),
    )
    l4 = np.int64(rec.l4_offset)
    if l4 > 0:
        p = start + l4
        stop = start + np.int64(rec.l3_offset) + np.int64(rec.ip_len)
        if stop > end:
            stop = end
        if stop > p + HASH_BYTES:
            stop = p + HASH_BYTES
        ck_word, ck_mask = _checksum_word(rec.proto)
        widx = 0
        q = p
        while q < stop:
            if q + 8 <= stop:
                v = _u64_at(data, q)
            else:
                v = np.uint64(0)
                for j in range(8):
                    b = np.uint64(data[q + j]) if q + j < stop else np.uint64(0)
                    v = (v << _S8) | b
            if widx == ck_word:
                v &= ck_mask
            h = _step(h, v)
            q += 8
            widx += 1
        h = _step(h, np.uint64(stop - p if stop > p else 0))
    h = _finish(h)
    if h == 0:
        h = np.uint64(1)
    return h


@njit(**KERNEL_OPTS)
def dedup_batch(data, offset, cap_len, packets, fp, ts, window_ns, keep):
    """Mark rows whose fingerprint was seen within ``window_ns``; update the cache.

    Args:
        data, offset, cap_len: the frames the rows were decoded from (``frame_index`` picks one;
            a row whose frame index is out of range is fingerprinted without frame bytes).
        packets: decoded rows; rows with ``ip_ver == 0`` (not IP) are always kept.
        fp, ts: the cache (``uint64`` / ``int64``, length a multiple of ``WAYS``, sets a power of 2).
        window_ns: a copy within this many ns (either direction) of the first one is a duplicate.
        keep: output, ``True`` for rows to keep.

    Returns:
        The number of duplicates found.
    """
    size = data.shape[0]
    n_frames = offset.shape[0]
    set_mask = np.uint64(fp.shape[0] // WAYS - 1)
    dups = 0
    for i in range(packets.shape[0]):
        rec = packets[i]
        if rec.ip_ver == 0:
            keep[i] = True
            continue
        fi = np.int64(rec.frame_index)
        start = np.int64(0)
        end = np.int64(0)
        if fi < n_frames:
            start = offset[fi]
            end = start + np.int64(cap_len[fi])
            if start < 0 or start > size:
                start = size
            if end > size:
                end = size
            if end < start:
                end = start
        h = fingerprint(data, start, end, rec)
        now = rec.ts_ns
        base = np.int64(h & set_mask) * WAYS
        slot = -1
        oldest = base
        found = False
        for j in range(base, base + WAYS):
            f = fp[j]
            if f == h:
                slot = j
                found = True
                break
            if f == 0:
                slot = j
                break
            if ts[j] < ts[oldest]:
                oldest = j
        if found:
            d = now - ts[slot]
            if d < 0:
                d = -d
            if d <= window_ns:
                keep[i] = False
                dups += 1
                continue
        elif slot < 0:
            slot = oldest
        fp[slot] = h
        ts[slot] = now
        keep[i] = True
    return dups

# mypy: disable-error-code="no-untyped-def, assignment, call-overload"
"""Numba kernels for IP fragment association: a bounded open-addressing table.

A slot holds the key (src, dst, proto, frag_id) of a datagram whose first fragment was seen,
with its ports and the time of its last fragment. Probing looks at ``PROBE`` consecutive slots;
slots are reused, never emptied, so a key always sits before the first empty slot of its window.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from cloudtap._kernel_opts import NO_ALLOC_OPTS
from cloudtap.schema.packet import (
    FLAG_FRAGMENT,
    FLAG_L4,
    FLAG_MORE_FRAGMENTS,
    FLAG_ORPHAN_FRAGMENT,
    STATUS_OK,
    STATUS_TRUNCATED,
)

#: Slots examined per lookup/insert.
PROBE = 8
SLOT_EMPTY = 0
SLOT_ACTIVE = 1  #: first fragment seen, last fragment not yet
SLOT_DONE = 2  #: last fragment seen: kept for stragglers, first to be reused

#: Indices into the ``stats`` array.
STAT_ORPHANS = 0
STAT_EVICTED = 1
STAT_ASSOCIATED = 2
N_STATS = 3

TABLE_DTYPE = np.dtype(
    [
        ("src_hi", "u8"),
        ("src_lo", "u8"),
        ("dst_hi", "u8"),
        ("dst_lo", "u8"),
        ("last_ns", "i8"),
        ("frag_id", "u4"),
        ("sport", "u2"),
        ("dport", "u2"),
        ("proto", "u1"),
        ("state", "u1"),
    ],
    align=True,
)

#: No NRT: the table and rows are passed between functions without refcounting (nothing allocates).
_OPTS = NO_ALLOC_OPTS
_K1 = np.uint64(0x9E3779B97F4A7C15)
_K2 = np.uint64(0xC2B2AE3D27D4EB4F)
_K3 = np.uint64(0x165667B19E3779F9)
_S = np.uint64(29)


@njit(**_OPTS)
def _hash(p):
    h = p.src_lo * _K1
    h ^= p.dst_lo * _K2
    h ^= (p.src_hi ^ (p.dst_hi * _K3)) * _K1
    h ^= (np.uint64(p.frag_id) << np.uint64(8) | np.uint64(p.proto)) * _K3
    h ^= h >> _S
    return h * _K2


@njit(**_OPTS)
def _same_key(s, p):
    return (
        s.frag_id == p.frag_id
        and s.src_lo == p.src_lo
        and s.dst_lo == p.dst_lo
        and s.proto == p.proto
        and s.src_hi == p.src_hi
        and s.dst_hi == p.dst_hi
    )


@njit(**_OPTS)
def _find(table, p, h):
    """Slot holding ``p``'s key, or -1."""
    mask = np.uint64(table.shape[0] - 1)
    for k in range(PROBE):
        idx = np.int64((h + np.uint64(k)) & mask)
        s = table[idx]
        if s.state == SLOT_EMPTY:
            return -1
        if _same_key(s, p):
            return idx
    return -1


@njit(**_OPTS)
def _insert(table, p, h, timeout_ns, stats):
    """Store a first fragment's key and ports (reusing the matching, an empty, a spent or the oldest slot)."""
    found = _find(table, p, h)
    if found < 0:
        mask = np.uint64(table.shape[0] - 1)
        best = -1
        best_rank = 3
        best_ns = np.int64(0)
        for k in range(PROBE):
            idx = np.int64((h + np.uint64(k)) & mask)
            s = table[idx]
            if s.state == SLOT_EMPTY:
                best = idx
                best_rank = 0
                break
            spent = s.state == SLOT_DONE or p.ts_ns - s.last_ns > timeout_ns
            rank = 1 if spent else 2
            if rank < best_rank or (rank == best_rank and s.last_ns < best_ns):
                best = idx
                best_rank = rank
                best_ns = s.last_ns
        if best_rank == 2:
            stats[STAT_EVICTED] += 1
        found = best
    s = table[found]
    s.src_hi = p.src_hi
    s.src_lo = p.src_lo
    s.dst_hi = p.dst_hi
    s.dst_lo = p.dst_lo
    s.frag_id = p.frag_id
    s.proto = p.proto
    s.sport = p.sport
    s.dport = p.dport
    s.last_ns = p.ts_ns
    s.state = SLOT_ACTIVE


@njit(**_OPTS)
def _is_fragment(p):
    return (
        (p.flags & FLAG_FRAGMENT) != 0
        and p.ip_ver != 0
        and (p.status == STATUS_OK or p.status == STATUS_TRUNCATED)
    )


@njit(**_OPTS)
def _resolve(p, table, timeout_ns, stats):
    """Give a later fragment its first fragment's ports; False when the first is unknown."""
    idx = _find(table, p, _hash(p))
    if idx < 0 or abs(p.ts_ns - table[idx].last_ns) > timeout_ns:
        return False
    s = table[idx]
    p.sport = s.sport
    p.dport = s.dport
    p.flags = p.flags & ~(FLAG_L4 | FLAG_ORPHAN_FRAGMENT)
    if p.ts_ns > s.last_ns:
        s.last_ns = p.ts_ns
    if not (p.flags & FLAG_MORE_FRAGMENTS):
        s.state = SLOT_DONE
    stats[STAT_ASSOCIATED] += 1
    return True


@njit(**_OPTS)
def associate_kernel(packets, table, timeout_ns, stats):
    """Give later fragments their first fragment's ports, in place.

    One pass in capture order, then a second look at the later fragments that missed, so a
    later fragment that arrived before its first fragment in the same batch is still associated.
    """
    n = packets.shape[0]
    missed = 0
    for i in range(n):
        p = packets[i]
        if not _is_fragment(p):
            continue
        if p.frag_offset == 0:
            _insert(table, p, _hash(p), timeout_ns, stats)
        elif not _resolve(p, table, timeout_ns, stats):
            p.sport = 0
            p.dport = 0
            p.flags = p.flags | FLAG_ORPHAN_FRAGMENT
            missed += 1
    if missed == 0:
        return
    for i in range(n):
        p = packets[i]
        if (p.flags & FLAG_ORPHAN_FRAGMENT) and _is_fragment(p) and p.frag_offset != 0:
            if not _resolve(p, table, timeout_ns, stats):
                stats[STAT_ORPHANS] += 1

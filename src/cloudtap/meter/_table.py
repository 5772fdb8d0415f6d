"""Open-addressing hash index over the flow slots (numba).

Array contract (all allocated by :class:`cloudtap.meter.table.FlowTable`):

- ``idx_slot``: ``int32[size]``, slot number stored at each index position, ``-1`` when empty.
- ``idx_hash``: ``uint32[size]``, the hash of that slot's key (saves touching the slot on a miss).
- ``size`` is a power of two, at least twice the slot capacity, so probes stay short.

Linear probing with backward-shift deletion: no tombstones, so a long run never degrades lookups.
The key hash is symmetric in the two endpoints, so both directions of a flow find the same slot.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from cloudtap._kernel_opts import NO_ALLOC_OPTS

_M1 = np.uint64(0xFF51AFD7ED558CCD)
_M2 = np.uint64(0xC4CEB9FE1A85EC53)
_S33 = np.uint64(33)
_GOLD = np.uint64(0x9E3779B97F4A7C15)


@njit(**NO_ALLOC_OPTS)
def mix64(x: np.uint64) -> np.uint64:
    """MurmurHash3 finaliser: a fast, well-spread 64-bit mix."""
    x ^= x >> _S33
    x *= _M1
    x ^= x >> _S33
    x *= _M2
    x ^= x >> _S33
    return x


@njit(**NO_ALLOC_OPTS)
def endpoint_hash(hi: np.uint64, lo: np.uint64, port: np.uint16) -> np.uint64:
    """Hash one (address, port) endpoint."""
    return mix64(hi * _GOLD ^ mix64(lo ^ (np.uint64(port) << np.uint64(17))))


@njit(**NO_ALLOC_OPTS)
def flow_hash(
    src_hi: np.uint64,
    src_lo: np.uint64,
    sport: np.uint16,
    dst_hi: np.uint64,
    dst_lo: np.uint64,
    dport: np.uint16,
    proto: np.uint8,
    vlan: np.uint16,
    tunnel_id: np.uint32,
    interface: np.uint16,
) -> np.uint32:
    """Direction-independent 32-bit hash of a flow key."""
    h = endpoint_hash(src_hi, src_lo, sport) + endpoint_hash(dst_hi, dst_lo, dport)
    extra = (
        (np.uint64(interface) << np.uint64(56))
        ^ (np.uint64(proto) << np.uint64(48))
        ^ (np.uint64(vlan) << np.uint64(32))
        ^ np.uint64(tunnel_id)
    )
    h = mix64(h ^ mix64(extra + _GOLD))
    return np.uint32(h >> np.uint64(32))


@njit(**NO_ALLOC_OPTS)
def index_insert(idx_slot: np.ndarray, idx_hash: np.ndarray, h: np.uint32, slot: int) -> None:
    """Insert ``slot`` with hash ``h``; the index must have a free position."""
    mask = idx_slot.shape[0] - 1
    pos = int(h) & mask
    while idx_slot[pos] >= 0:
        pos = (pos + 1) & mask
    idx_slot[pos] = slot
    idx_hash[pos] = h


@njit(**NO_ALLOC_OPTS)
def index_remove(idx_slot: np.ndarray, idx_hash: np.ndarray, h: np.uint32, slot: int) -> bool:
    """Remove ``slot`` (whose key hashes to ``h``) with backward-shift deletion."""
    mask = idx_slot.shape[0] - 1
    pos = int(h) & mask
    while True:
        s = idx_slot[pos]
        if s < 0:
            return False
        if s == slot:
            break
        pos = (pos + 1) & mask
    # Backward shift: pull later members of the run into the hole when their home allows it.
    hole = pos
    nxt = (hole + 1) & mask
    while idx_slot[nxt] >= 0:
        home = int(idx_hash[nxt]) & mask
        # Move the entry at nxt into the hole if its home is not in (hole, nxt] cyclically.
        if (nxt > hole and (home <= hole or home > nxt)) or (nxt < hole and (home <= hole and home > nxt)):
            idx_slot[hole] = idx_slot[nxt]
            idx_hash[hole] = idx_hash[nxt]
            hole = nxt
        nxt = (nxt + 1) & mask
    idx_slot[hole] = -1
    idx_hash[hole] = 0
    return True


@njit(**NO_ALLOC_OPTS)
def index_rebuild(
    idx_slot: np.ndarray, idx_hash: np.ndarray, hashes: np.ndarray, active: np.ndarray, n: int
) -> None:
    """Index the ``n`` used slots listed in ``active`` (whose key hashes are ``hashes[slot]``) into an empty index."""
    for k in range(n):
        s = active[k]
        index_insert(idx_slot, idx_hash, hashes[s], s)

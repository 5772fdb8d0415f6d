"""The flow table's hash index (cloudtap.meter._table): hashing, linear probing, backward-shift deletion."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudtap.meter._table import flow_hash, index_insert, index_remove, mix64
from cloudtap.schema.address import from_text

A = (*from_text("10.0.0.1"), 40000)
B = (*from_text("10.0.0.2"), 80)


def _hash(
    src: tuple[int, int, int],
    dst: tuple[int, int, int],
    proto: int = 6,
    vlan: int = 0,
    tid: int = 0,
    iface: int = 0,
) -> int:
    return int(
        flow_hash(
            np.uint64(src[0]), np.uint64(src[1]), np.uint16(src[2]),
            np.uint64(dst[0]), np.uint64(dst[1]), np.uint16(dst[2]),
            np.uint8(proto), np.uint16(vlan), np.uint32(tid), np.uint16(iface),
        )
    )  # fmt: skip


def test_flow_hash_is_direction_free_and_uses_every_key_part() -> None:
    h = _hash(A, B)
    assert h == _hash(B, A)
    variants = {
        _hash(A, B, proto=17),
        _hash(A, B, vlan=7),
        _hash(A, B, tid=5001),
        _hash(A, B, iface=1),
        _hash((A[0], A[1], 40001), B),
        _hash((*from_text("10.0.0.3"), 40000), B),
        _hash((*from_text("fd00::1"), 40000), B),
    }
    assert h not in variants and len(variants) == 7
    assert 0 <= h < 1 << 32


def test_mix64_spreads_neighbouring_keys() -> None:
    values = [int(mix64(np.uint64(i))) for i in range(1, 1025)]
    assert len(set(values)) == 1024
    low_bits = {v & 1023 for v in values}
    assert len(low_bits) > 550  # ~ 1024 * (1 - 1/e) for a random function


def _new(size: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full(size, -1, np.int32), np.zeros(size, np.uint32)


def _position(idx_slot: np.ndarray, idx_hash: np.ndarray, h: int, slot: int) -> int:
    """Where a lookup probing from ``h``'s home finds ``slot``; -1 if an empty position comes first."""
    mask = len(idx_slot) - 1
    pos = h & mask
    while idx_slot[pos] >= 0:
        if idx_slot[pos] == slot:
            assert idx_hash[pos] == h
            return pos
        pos = (pos + 1) & mask
    return -1


def _check(idx_slot: np.ndarray, idx_hash: np.ndarray, live: dict[int, int]) -> None:
    """The index holds exactly ``live`` (slot -> hash), each reachable from its home."""
    stored = sorted(int(s) for s in idx_slot if s >= 0)
    assert stored == sorted(live)
    assert (idx_hash[idx_slot < 0] == 0).all()
    for slot, h in live.items():
        assert _position(idx_slot, idx_hash, h, slot) >= 0, (slot, h)


def test_colliding_hashes_probe_linearly_and_removal_shifts_back() -> None:
    idx_slot, idx_hash = _new(16)
    for slot in range(6):
        index_insert(idx_slot, idx_hash, np.uint32(0x1000_0005), slot)  # same hash: home 5
    assert idx_slot[5:11].tolist() == [0, 1, 2, 3, 4, 5]
    assert index_remove(idx_slot, idx_hash, np.uint32(0x1000_0005), 2)
    assert idx_slot[5:11].tolist() == [0, 1, 3, 4, 5, -1]  # the run closes up: no tombstone
    assert not index_remove(idx_slot, idx_hash, np.uint32(0x1000_0005), 2)
    _check(idx_slot, idx_hash, {s: 0x1000_0005 for s in (0, 1, 3, 4, 5)})


def test_runs_wrap_around_the_end_and_keep_foreign_homes() -> None:
    idx_slot, idx_hash = _new(16)
    live = {0: 14, 1: 14, 2: 15, 3: 14, 4: 0, 5: 1}  # a run 14, 15, 0, 1, 2, 3
    for slot, h in live.items():
        index_insert(idx_slot, idx_hash, np.uint32(h), slot)
    assert idx_slot[[14, 15, 0, 1, 2, 3]].tolist() == [0, 1, 2, 3, 4, 5]
    assert index_remove(idx_slot, idx_hash, np.uint32(14), 0)
    del live[0]
    _check(idx_slot, idx_hash, live)
    assert idx_slot[[14, 15, 0, 1, 2, 3]].tolist() == [1, 2, 3, 4, 5, -1]
    assert index_remove(idx_slot, idx_hash, np.uint32(14), 3)
    del live[3]
    _check(idx_slot, idx_hash, live)
    assert idx_slot[[14, 15, 0, 1, 2]].tolist() == [1, 2, 4, 5, -1]
    index_insert(idx_slot, idx_hash, np.uint32(2), 6)
    live[6] = 2
    assert index_remove(idx_slot, idx_hash, np.uint32(0), 4)
    del live[4]
    _check(idx_slot, idx_hash, live)
    # entries already at their home (5 at 1, 6 at 2) must not shift back before it
    assert idx_slot[[14, 15, 0, 1, 2]].tolist() == [1, 2, -1, 5, 6]


HOMES = st.sampled_from([0, 1, 2, 7, 61, 62, 63, 64 + 63])  # 64 + 63 has home 63 in a 64-row index
OPS = st.lists(st.tuples(st.booleans(), st.integers(0, 39), HOMES), max_size=300)


@settings(max_examples=150, deadline=None)
@given(OPS)
def test_random_inserts_and_removes_match_a_dict(ops: list[tuple[bool, int, int]]) -> None:
    """Few distinct homes (heavy collisions, runs across the end) against a plain dict."""
    idx_slot, idx_hash = _new(64)
    live: dict[int, int] = {}
    for insert, slot, h in ops:
        if insert and slot not in live and len(live) < 32:
            index_insert(idx_slot, idx_hash, np.uint32(h), slot)
            live[slot] = h
        elif not insert:
            removed = index_remove(idx_slot, idx_hash, np.uint32(live.get(slot, h)), slot)
            assert removed == (slot in live)
            live.pop(slot, None)
        _check(idx_slot, idx_hash, live)


def test_long_random_churn_matches_a_dict() -> None:
    rng = np.random.default_rng(0)
    idx_slot, idx_hash = _new(256)
    live: dict[int, int] = {}
    homes = rng.integers(0, 1 << 32, size=24, dtype=np.uint64).astype(np.uint32)  # 24 hashes for 128 slots
    for _ in range(5000):
        slot = int(rng.integers(0, 128))
        if slot in live:
            assert index_remove(idx_slot, idx_hash, np.uint32(live.pop(slot)), slot)
        else:
            h = int(homes[rng.integers(0, len(homes))])
            index_insert(idx_slot, idx_hash, np.uint32(h), slot)
            live[slot] = h
    _check(idx_slot, idx_hash, live)
    assert len(live) > 40

"""FragmentTracker: later fragments get their first fragment's ports, within and across batches."""

from __future__ import annotations

import numpy as np
import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment, fragment6
from scapy.layers.l2 import Ether
from scapy.packet import raw

from cloudtap.capture.frames import FrameBatch
from cloudtap.decode import FragmentTracker, decode_frames
from cloudtap.errors import ConfigError
from cloudtap.schema.packet import (
    FLAG_L4,
    FLAG_LATER_FRAGMENT,
    FLAG_ORPHAN_FRAGMENT,
    PACKET_DTYPE,
)

ETH = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")


def make_batch(frames: list[bytes], t0_ns: int = 0) -> FrameBatch:
    """FrameBatch of Ethernet frames, 1 µs apart from ``t0_ns``."""
    n = len(frames)
    lens = np.array([len(f) for f in frames], dtype=np.uint32)
    offset = np.zeros(n, dtype=np.int64)
    offset[1:] = np.cumsum(lens, dtype=np.int64)[:-1]
    return FrameBatch(
        data=np.frombuffer(b"".join(frames), dtype=np.uint8),
        offset=offset,
        cap_len=lens,
        wire_len=lens.copy(),
        ts_ns=t0_ns + np.arange(n, dtype=np.int64) * 1000,
        linktype=np.ones(n, dtype=np.uint16),
        interface=np.zeros(n, dtype=np.uint16),
    )


def v4_fragments(ident: int, sport: int = 1111, dport: int = 2222, src: str = "10.0.0.1") -> list[bytes]:
    pkt = IP(src=src, dst="10.0.0.2", id=ident) / UDP(sport=sport, dport=dport) / (b"z" * 100)
    return [raw(ETH / f) for f in IP(raw(pkt)).fragment(48)]  # 3 fragments


def v6_fragments(ident: int) -> list[bytes]:
    pkt = IPv6(src="fd00::1", dst="fd00::2") / IPv6ExtHdrFragment(id=ident) / UDP(sport=7, dport=8) / (
        b"y" * 200)
    return [raw(ETH / f) for f in fragment6(pkt, 120)]


def decoded(frames: list[bytes], t0_ns: int = 0) -> np.ndarray:
    return decode_frames(make_batch(frames, t0_ns))


def test_later_fragments_get_ports_in_one_batch():
    rows = decoded(v4_fragments(1))
    tracker = FragmentTracker()
    tracker.associate(rows)
    assert list(rows["sport"]) == [1111] * 3
    assert list(rows["dport"]) == [2222] * 3
    assert (rows["flags"][1:] & FLAG_L4 == 0).all()
    assert rows["flags"][0] & FLAG_L4
    assert not (rows["flags"] & FLAG_ORPHAN_FRAGMENT).any()
    assert (tracker.associated, tracker.orphans, tracker.evicted) == (2, 0, 0)


def test_reordered_within_a_batch_still_associates():
    frags = v4_fragments(2)
    rows = decoded([frags[2], frags[1], frags[0]])
    tracker = FragmentTracker()
    tracker.associate(rows)
    assert list(rows["sport"]) == [1111] * 3
    assert tracker.orphans == 0


def test_across_batches():
    frags = v4_fragments(3)
    tracker = FragmentTracker()
    first = decoded(frags[:1])
    tracker.associate(first)
    later = decoded(frags[1:], t0_ns=5_000_000)
    tracker.associate(later)
    assert list(later["sport"]) == [1111, 1111]
    assert tracker.associated == 2


def test_orphans_when_first_comes_later_or_never():
    frags = v4_fragments(4)
    tracker = FragmentTracker()
    early = decoded(frags[1:])
    tracker.associate(early)
    assert (early["sport"] == 0).all() and (early["dport"] == 0).all()
    assert (early["flags"] & FLAG_ORPHAN_FRAGMENT).all()
    assert tracker.orphans == 2
    first = decoded(frags[:1])
    tracker.associate(first)
    assert first["sport"][0] == 1111
    assert not first["flags"][0] & FLAG_ORPHAN_FRAGMENT


def test_key_includes_id_and_addresses():
    a = v4_fragments(10, sport=1, dport=2)
    b = v4_fragments(11, sport=3, dport=4)
    c = v4_fragments(10, sport=5, dport=6, src="10.0.0.9")
    rows = decoded([a[0], b[0], c[0], c[1], a[1], b[1], a[2]])
    FragmentTracker().associate(rows)
    assert list(zip(rows["sport"], rows["dport"], strict=True)) == [
        (1, 2), (3, 4), (5, 6), (5, 6), (1, 2), (3, 4), (1, 2)
    ]


def test_ipv6_fragments():
    frags = v6_fragments(0xCAFE0001)
    rows = decoded(frags)
    assert (rows["flags"][1:] & FLAG_LATER_FRAGMENT).all()
    tracker = FragmentTracker()
    tracker.associate(rows)
    assert (rows["sport"] == 7).all() and (rows["dport"] == 8).all()
    assert tracker.associated == len(frags) - 1


def test_timeout_makes_orphans():
    frags = v4_fragments(5)
    tracker = FragmentTracker(timeout_ns=1_000_000)
    tracker.associate(decoded(frags[:1]))
    late = decoded(frags[1:], t0_ns=10_000_000)
    tracker.associate(late)
    assert (late["flags"] & FLAG_ORPHAN_FRAGMENT).all()
    assert tracker.orphans == 2


def test_straggler_after_last_fragment_still_associated():
    frags = v4_fragments(6)
    tracker = FragmentTracker()
    rows = decoded([frags[0], frags[2]])
    tracker.associate(rows)
    straggler = decoded([frags[1]], t0_ns=3000)
    tracker.associate(straggler)
    assert straggler["sport"][0] == 1111


def test_table_is_bounded_and_counts_evictions():
    tracker = FragmentTracker(capacity=16)
    assert tracker.capacity == 16
    firsts = [v4_fragments(1000 + k)[0] for k in range(200)]
    tracker.associate(decoded(firsts))
    assert tracker.evicted > 0
    assert tracker.capacity == 16
    tracker.clear()
    assert (tracker.evicted, tracker.orphans, tracker.associated) == (0, 0, 0)


def test_in_order_stream_larger_than_table_needs_no_eviction():
    tracker = FragmentTracker(capacity=16)
    frames = [f for k in range(100) for f in v4_fragments(2000 + k, sport=k + 1)]
    rows = decoded(frames)
    tracker.associate(rows)
    assert (tracker.associated, tracker.orphans, tracker.evicted) == (200, 0, 0)
    assert list(rows["sport"][2::3]) == list(range(1, 101))


def test_non_fragments_untouched():
    frames = [raw(ETH / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2))] * 3
    rows = decoded(frames)
    before = rows.copy()
    FragmentTracker().associate(rows)
    assert (rows == before).all()


def test_validation():
    with pytest.raises(ConfigError):
        FragmentTracker(capacity=0)
    with pytest.raises(ConfigError):
        FragmentTracker(timeout_ns=0)
    with pytest.raises(ValueError):
        FragmentTracker().associate(np.zeros(3, dtype=np.int64))
    ro = np.zeros(2, dtype=PACKET_DTYPE)
    ro.flags.writeable = False
    with pytest.raises(ValueError):
        FragmentTracker().associate(ro)

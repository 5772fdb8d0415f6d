"""Deduplicator tests: mirror copies of one inner packet are dropped, genuinely new packets kept."""

from __future__ import annotations

import struct
import time
from typing import Any

import numpy as np
import pytest
from scapy.compat import raw
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether
from scapy.layers.vxlan import VXLAN
from scapy.packet import Packet

from cloudtap.capture.frames import FrameBatch
from cloudtap.decode import decode_frames
from cloudtap.decode.dedup import Deduplicator
from cloudtap.errors import ConfigError
from cloudtap.schema.address import from_text
from cloudtap.schema.packet import (
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    STATUS_NOT_IP,
    STATUS_OK,
    TUNNEL_ERSPAN2,
    TUNNEL_ERSPAN3,
    TUNNEL_VXLAN,
    empty_packets,
)

MS = 1_000_000
T0 = 1_700_000_000 * 1_000_000_000


def frames_of(items: list[tuple[bytes, int, int]]) -> FrameBatch:
    """FrameBatch from ``(bytes, linktype, ts_ns)`` triples (frames at odd offsets on purpose)."""
    data = bytearray(b"\xee")
    offs = []
    for buf, _, _ in items:
        offs.append(len(data))
        data += buf
    n = len(items)
    lens = np.array([len(b) for b, _, _ in items], np.uint32)
    return FrameBatch(
        data=np.frombuffer(bytes(data), np.uint8),
        offset=np.array(offs, np.int64),
        cap_len=lens,
        wire_len=lens.copy(),
        ts_ns=np.array([t for _, _, t in items], np.int64),
        linktype=np.array([lt for _, lt, _ in items], np.uint16),
        interface=np.zeros(n, np.uint16),
    )


def inner_tcp(
    ttl: int = 64, seq: int = 1000, ip_id: int = 7, payload: bytes = b"GET / HTTP/1.1\r\n", **tcp: object
) -> Packet:
    """The mirrored VM packet: Ethernet/IPv4/TCP with a payload."""
    fields: dict[str, Any] = {
        "sport": 40000,
        "dport": 80,
        "flags": "PA",
        "seq": seq,
        "ack": 555,
        "window": 501,
    }
    fields.update(tcp)
    return (
        Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
        / IP(src="10.1.0.1", dst="10.1.0.2", ttl=ttl, id=ip_id)
        / TCP(**fields)
        / payload
    )


def erspan2(inner: Packet, session: int, outer_src: str, seq: int = 1) -> bytes:
    """Outer IPv4 / GRE (S) / ERSPAN type II / inner frame, as raw IPv4 (linktype 228)."""
    gre = struct.pack("!BBHI", 0x10, 0, 0x88BE, seq)
    hdr = struct.pack("!HHI", (1 << 12) | 0, session & 0x3FF, 0)
    return raw(IP(src=outer_src, dst="192.0.2.100", proto=47) / (gre + hdr + raw(inner)))


def erspan3(inner: Packet, session: int, outer_src: str, seq: int = 1) -> bytes:
    """Outer IPv4 / GRE (S) / ERSPAN type III (Ethernet frame type) / inner frame."""
    gre = struct.pack("!BBHI", 0x10, 0, 0x22EB, seq)
    hdr = struct.pack("!HHIHH", (2 << 12) | 0, session & 0x3FF, 123456, 0, 0)
    return raw(IP(src=outer_src, dst="192.0.2.100", proto=47) / (gre + hdr + raw(inner)))


def vxlan(inner: Packet, vni: int, outer_src: str) -> bytes:
    """Outer Ethernet/IPv4/UDP 4789/VXLAN/inner frame (linktype 1)."""
    return raw(
        Ether(src="02:00:00:00:00:0a", dst="02:00:00:00:00:0b")
        / IP(src=outer_src, dst="192.0.2.100")
        / UDP(sport=51000, dport=4789)
        / VXLAN(vni=vni)
        / inner
    )


def run(
    items: list[tuple[bytes, int, int]], dedup: Deduplicator | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Decode and mask; returns (keep, rows)."""
    fb = frames_of(items)
    rows = decode_frames(fb)
    assert np.isin(rows["status"], [STATUS_OK, STATUS_NOT_IP]).all()
    d = dedup if dedup is not None else Deduplicator()
    return d.mask(fb, rows), rows


def test_copies_from_two_erspan_sessions_are_one_packet() -> None:
    """Session 1 (ERSPAN II) and session 2 (ERSPAN III, routed: TTL - 1), 1 ms apart."""
    a = erspan2(inner_tcp(ttl=64), 1, "192.0.2.1")
    b = erspan3(inner_tcp(ttl=63), 2, "192.0.2.9", seq=99)
    d = Deduplicator()
    keep, rows = run([(a, LINKTYPE_IPV4, T0), (b, LINKTYPE_IPV4, T0 + MS)], d)
    assert list(rows["tunnel_type"]) == [TUNNEL_ERSPAN2, TUNNEL_ERSPAN3]
    assert list(rows["tunnel_id"]) == [1, 2]
    assert keep.tolist() == [True, False]
    assert (d.duplicates, d.passed) == (1, 1)


def test_copies_from_two_vnis_and_outer_sources() -> None:
    a = vxlan(inner_tcp(), 100, "192.0.2.1")
    b = vxlan(inner_tcp(ttl=63), 200, "192.0.2.2")
    keep, rows = run([(a, LINKTYPE_ETHERNET, T0), (b, LINKTYPE_ETHERNET, T0 + 3 * MS)])
    assert list(rows["tunnel_type"]) == [TUNNEL_VXLAN, TUNNEL_VXLAN]
    assert list(rows["tunnel_id"]) == [100, 200]
    assert keep.tolist() == [True, False]


def test_different_encapsulations_of_one_packet() -> None:
    """A copy over VXLAN (Ethernet capture) and one over ERSPAN (raw IPv4) are the same packet."""
    a = vxlan(inner_tcp(), 100, "192.0.2.1")
    b = erspan2(inner_tcp(ttl=62), 5, "192.0.2.7")
    keep, _ = run([(a, LINKTYPE_ETHERNET, T0), (b, LINKTYPE_IPV4, T0 + 10 * MS)])
    assert keep.tolist() == [True, False]


def test_retransmission_beyond_window_is_kept() -> None:
    """A byte-identical TCP retransmission 200 ms later is a new packet (window 50 ms)."""
    pkt = inner_tcp()
    d = Deduplicator(window_ns=50 * MS)
    keep, _ = run(
        [
            (erspan2(pkt, 1, "192.0.2.1"), LINKTYPE_IPV4, T0),
            (erspan2(pkt, 2, "192.0.2.9"), LINKTYPE_IPV4, T0 + MS),
            (erspan2(pkt, 1, "192.0.2.1"), LINKTYPE_IPV4, T0 + 200 * MS),
            (erspan2(pkt, 2, "192.0.2.9"), LINKTYPE_IPV4, T0 + 201 * MS),
        ],
        d,
    )
    assert keep.tolist() == [True, False, True, False]
    assert (d.duplicates, d.passed) == (2, 2)


def test_fast_retransmission_within_window_differs_by_ip_id() -> None:
    keep, _ = run(
        [
            (erspan2(inner_tcp(ip_id=7), 1, "192.0.2.1"), LINKTYPE_IPV4, T0),
            (erspan2(inner_tcp(ip_id=8), 1, "192.0.2.1"), LINKTYPE_IPV4, T0 + 2 * MS),
        ]
    )
    assert keep.tolist() == [True, True]


def test_tcp_timestamp_option_distinguishes_resends() -> None:
    a = inner_tcp(ip_id=0, options=[("Timestamp", (1000, 5))])
    b = inner_tcp(ip_id=0, options=[("Timestamp", (1003, 5))])
    keep, _ = run(
        [
            (erspan2(a, 1, "192.0.2.1"), LINKTYPE_IPV4, T0),
            (erspan2(b, 1, "192.0.2.1"), LINKTYPE_IPV4, T0 + MS),
        ]
    )
    assert keep.tolist() == [True, True]


@pytest.mark.parametrize(
    "change",
    [
        {"seq": 2000},
        {"ack": 556},
        {"flags": "A"},
        {"window": 502},
        {"sport": 40001},
        {"payload": b"GET /x HTTP/1.1\r\n"},
        {"payload": b"GET / HTTP/1.0\r\n"},
    ],
)
def test_any_inner_difference_makes_a_new_packet(change: dict[str, object]) -> None:
    keep, _ = run(
        [
            (erspan2(inner_tcp(), 1, "192.0.2.1"), LINKTYPE_IPV4, T0),
            (erspan2(inner_tcp(**change), 2, "192.0.2.9"), LINKTYPE_IPV4, T0 + MS),  # type: ignore[arg-type]
        ]
    )
    assert keep.tolist() == [True, True]


def test_l4_checksum_and_ethernet_padding_do_not_matter() -> None:
    """Checksum offload (one copy with a partial checksum) and different pad bytes: same packet."""
    a = raw(inner_tcp(payload=b"hi"))
    b = bytearray(raw(inner_tcp(payload=b"hi", ttl=63, chksum=0x1234)))
    a += b"\x00" * 4  # short frame padded with zeros...
    b += b"\xab" * 4  # ...and with garbage
    keep, rows = run([(a, LINKTYPE_ETHERNET, T0), (bytes(b), LINKTYPE_ETHERNET, T0 + MS)])
    assert rows["payload_len"].tolist() == [2, 2]
    assert keep.tolist() == [True, False]


def test_out_of_order_copies_and_a_third_copy() -> None:
    """The second source's copy may carry an earlier timestamp; a third copy is dropped too."""
    pkt = inner_tcp()
    d = Deduplicator()
    keep, _ = run(
        [
            (erspan2(pkt, 1, "192.0.2.1"), LINKTYPE_IPV4, T0 + 5 * MS),
            (erspan2(pkt, 2, "192.0.2.2"), LINKTYPE_IPV4, T0 + 1 * MS),
            (erspan2(pkt, 3, "192.0.2.3"), LINKTYPE_IPV4, T0 + 9 * MS),
        ],
        d,
    )
    assert keep.tolist() == [True, False, False]
    assert d.duplicates == 2


def test_state_carries_across_batches() -> None:
    d = Deduplicator()
    pkt = inner_tcp()
    k1, _ = run([(erspan2(pkt, 1, "192.0.2.1"), LINKTYPE_IPV4, T0)], d)
    k2, _ = run([(erspan2(pkt, 2, "192.0.2.2"), LINKTYPE_IPV4, T0 + MS)], d)
    assert (k1.tolist(), k2.tolist()) == ([True], [False])
    d.reset()
    k3, _ = run([(erspan2(pkt, 2, "192.0.2.2"), LINKTYPE_IPV4, T0 + 2 * MS)], d)
    assert k3.tolist() == [True]
    assert (d.duplicates, d.passed) == (1, 2)


def test_non_ip_rows_are_always_kept() -> None:
    arp = raw(Ether(dst="ff:ff:ff:ff:ff:ff") / ARP(pdst="10.1.0.2"))
    d = Deduplicator()
    keep, rows = run([(arp, LINKTYPE_ETHERNET, T0), (arp, LINKTYPE_ETHERNET, T0 + 1)], d)
    assert (rows["status"] == STATUS_NOT_IP).all()
    assert keep.tolist() == [True, True]
    assert d.duplicates == 0


def test_rows_follow_frame_index_and_subsets() -> None:
    """Rows may be a reordered subset of the batch: frame bytes are found through frame_index."""
    a = erspan2(inner_tcp(payload=b"aaaa"), 1, "192.0.2.1")
    b = erspan2(inner_tcp(payload=b"bbbb"), 1, "192.0.2.1")
    a2 = erspan2(inner_tcp(payload=b"aaaa", ttl=60), 2, "192.0.2.2")
    fb = frames_of([(a, LINKTYPE_IPV4, T0), (b, LINKTYPE_IPV4, T0 + 1), (a2, LINKTYPE_IPV4, T0 + 2)])
    rows = decode_frames(fb)
    keep = Deduplicator().mask(fb, rows[[2, 1, 0]])
    assert keep.tolist() == [True, True, False]


def test_synthetic_rows_without_frame_bytes() -> None:
    """Rows alone (no frames): fingerprints come from the row fields."""
    rows = empty_packets(4)
    hi, lo = from_text("10.9.0.1")
    rows["src_hi"], rows["src_lo"] = hi, lo
    rows["dst_hi"], rows["dst_lo"] = from_text("10.9.0.2")
    rows["ip_ver"], rows["proto"], rows["sport"], rows["dport"] = 4, 6, 1234, 443
    rows["tcp_seq"] = [1, 1, 2, 1]
    rows["ts_ns"] = T0 + np.array([0, 1, 2, 100]) * MS
    rows["frame_index"] = 99  # no such frame: row fields only
    rows["tunnel_id"] = [1, 2, 1, 2]  # outer side: ignored
    rows["tunnel_src_lo"] = [5, 6, 5, 6]
    d = Deduplicator(window_ns=50 * MS)
    keep = d.mask(FrameBatch.empty(), rows)
    assert keep.tolist() == [True, False, True, True]


def test_bounded_cache_evicts_oldest() -> None:
    """With room for 8 fingerprints, a copy arriving after many other packets is no longer matched."""
    rows = empty_packets(40)
    rows["ip_ver"], rows["proto"] = 4, 17
    rows["src_lo"] = np.arange(40)
    rows["ts_ns"] = T0 + np.arange(40)
    rows["frame_index"] = 1 << 30
    d = Deduplicator(capacity=8)
    assert d.capacity == 8
    assert d.mask(FrameBatch.empty(), rows).all()
    again = rows[[39, 0]].copy()
    again["ts_ns"] = T0 + 50
    assert d.mask(FrameBatch.empty(), again).tolist() == [False, True]


def test_capacity_is_rounded_and_validated() -> None:
    assert Deduplicator(capacity=1000).capacity == 1024
    assert Deduplicator(capacity=1).capacity == 8
    with pytest.raises(ConfigError):
        Deduplicator(window_ns=-1)
    with pytest.raises(ConfigError):
        Deduplicator(capacity=0)
    with pytest.raises(ValueError):
        Deduplicator().mask(FrameBatch.empty(), np.zeros(3, np.int64))


def test_zero_window_only_drops_same_instant_copies() -> None:
    pkt = inner_tcp()
    keep, _ = run(
        [
            (erspan2(pkt, 1, "192.0.2.1"), LINKTYPE_IPV4, T0),
            (erspan2(pkt, 2, "192.0.2.2"), LINKTYPE_IPV4, T0),
            (erspan2(pkt, 3, "192.0.2.3"), LINKTYPE_IPV4, T0 + 1),
        ],
        Deduplicator(window_ns=0),
    )
    assert keep.tolist() == [True, False, True]


def _mirrored_stream(n: int) -> tuple[FrameBatch, np.ndarray]:
    """``n`` Ethernet/IPv4/TCP frames: ``n // 2`` packets, each seen twice (second copy TTL - 1)."""
    tmpl = np.frombuffer(raw(inner_tcp(payload=b"p" * 16)), np.uint8)
    size = tmpl.shape[0]
    buf = np.tile(tmpl, n).reshape(n, size)
    ids = np.repeat(np.arange(n // 2, dtype=np.int64), 2)
    buf[:, 38:42] = (ids * 1460).astype(">u4").view(np.uint8).reshape(-1, 4)
    buf[:, 34:36] = (1024 + ids % 5000).astype(">u2").view(np.uint8).reshape(-1, 2)
    buf[1::2, 22] -= 1
    fb = FrameBatch(
        data=buf.reshape(-1),
        offset=np.arange(n, dtype=np.int64) * size,
        cap_len=np.full(n, size, np.uint32),
        wire_len=np.full(n, size, np.uint32),
        ts_ns=T0 + np.arange(n, dtype=np.int64) * 1000,
        linktype=np.full(n, LINKTYPE_ETHERNET, np.uint16),
        interface=np.zeros(n, np.uint16),
    )
    return fb, decode_frames(fb)


def test_throughput_on_a_million_rows() -> None:
    """Every second row is a copy; report Mpps (target > 10 Mpps). Speed is not asserted: this runs on
    busy shared machines, and timing belongs in a benchmark."""
    fb, rows = _mirrored_stream(1_000_000)
    Deduplicator().mask(fb, rows[:16])  # compile / load the cache
    d = Deduplicator()
    t = time.perf_counter()
    keep = d.mask(fb, rows)
    dt = time.perf_counter() - t
    assert keep[0::2].all() and not keep[1::2].any()
    assert (d.duplicates, d.passed) == (500_000, 500_000)
    mpps = len(rows) / dt / 1e6
    print(f"Deduplicator.mask: {mpps:.1f} Mpps")

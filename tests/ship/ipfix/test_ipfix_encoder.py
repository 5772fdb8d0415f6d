"""The IPFIX encoder against a plain-Python decoder: field layout, lengths, templates, sequence, MTU."""

from __future__ import annotations

import ipaddress
import socket
import struct

import numpy as np
import pytest
from ipfix_oracle import Decoder, Message, address, uint

from cloudtap.errors import ConfigError
from cloudtap.schema.flow import FLOW_DTYPE
from cloudtap.ship.ipfix.elements import (
    CLOUDTAP_PEN,
    ELEMENTS_V4,
    ELEMENTS_V6,
    FLOW_END_REASON,
    RECORD_LEN_V4,
    RECORD_LEN_V6,
    REVERSE_PEN,
    TEMPLATE_V4,
    TEMPLATE_V6,
    template_set,
)
from cloudtap.ship.ipfix.encoder import IpfixEncoder
from cloudtap.ship.ipfix.exporter import IpfixExporter, exporter_for_cli
from cloudtap.ship.ipfix.transport import parse_target

V4_MAPPED = 0xFFFF_0000_0000


def _flows(n: int, v6_every: int = 0, seed: int = 1) -> np.ndarray:
    """Records with every field set to a distinct value (IPv6 every ``v6_every``-th when > 0)."""
    rng = np.random.default_rng(seed)
    f = np.zeros(n, FLOW_DTYPE)
    for name in FLOW_DTYPE.names:
        dt = FLOW_DTYPE.fields[name][0]
        if dt.kind == "f":
            f[name] = rng.uniform(-1, 5e5, n).round(3)
        else:
            hi = min(np.iinfo(dt).max, 2**40)
            f[name] = rng.integers(1, hi, n, dtype=np.int64).astype(dt)
    f["start_ns"] = 1_700_000_000_000_000_000 + rng.integers(0, 10**12, n)
    f["first_ns"] = f["start_ns"] + 123_456_789
    f["last_ns"] = f["first_ns"] + rng.integers(0, 10**10, n)
    f["rtt_client_us"][0] = -1.0
    f["ip_ver"] = 4
    f["client_hi"] = 0
    f["server_hi"] = 0
    f["client_lo"] = V4_MAPPED | rng.integers(1, 2**32, n, dtype=np.uint64)
    f["server_lo"] = V4_MAPPED | rng.integers(1, 2**32, n, dtype=np.uint64)
    f["close_type"] = np.arange(n) % 9
    if v6_every:
        six = np.arange(n) % v6_every == v6_every - 1
        f["ip_ver"][six] = 6
        f["client_hi"][six] = 0x2001_0DB8_0000_0000
        f["server_hi"][six] = 0xFE80_0000_0000_0000
    return f


def _decode_all(encoder: IpfixEncoder, flows: np.ndarray) -> list[Message]:
    dec = Decoder()
    return [dec.decode(bytes(m)) for m, _ in encoder.messages_for(flows)]


def _expected(f: np.void, element: str, field: str) -> object:
    if element == "flowEndReason":
        return FLOW_END_REASON[int(f["close_type"])]
    if field.endswith("_ns") and element.endswith("Milliseconds"):
        return int(f[field]) // 1_000_000
    if "," in field:  # IPv6 address from hi, lo
        hi, lo = field.split(",")
        return str(ipaddress.IPv6Address(int(f[hi]) << 64 | int(f[lo])))
    if element.endswith("IPv4Address"):
        return str(ipaddress.IPv4Address(int(f[field]) & 0xFFFF_FFFF))
    return f[field].item()


def _value(raw: bytes, element: str, field: str) -> object:
    if "Address" in element:
        return address(raw)
    if FLOW_DTYPE.fields[field.split(",")[0]][0].kind == "f":
        return struct.unpack("!d", raw)[0]
    return uint(raw)


def test_template_set_announces_both_layouts() -> None:
    dec = Decoder()
    msg = dec.decode(struct.pack("!HHIII", 10, 16 + len(template_set()), 0, 0, 0) + template_set())
    assert msg.template_ids == [TEMPLATE_V4, TEMPLATE_V6]
    for tid, elements in ((TEMPLATE_V4, ELEMENTS_V4), (TEMPLATE_V6, ELEMENTS_V6)):
        assert dec.templates[tid] == [(e.element_id, e.enterprise, e.length) for e in elements]
    assert sum(e.length for e in ELEMENTS_V4) == RECORD_LEN_V4
    pens = {e.enterprise for e in ELEMENTS_V6}
    assert pens == {0, REVERSE_PEN, CLOUDTAP_PEN}


def test_every_field_round_trips_ipv4_and_ipv6() -> None:
    flows = _flows(40, v6_every=3)
    msgs = _decode_all(IpfixEncoder(), flows)
    records = [r for m in msgs for r in m.records]
    assert len(records) == len(flows)
    for f, (tid, rec) in zip(flows, records, strict=True):
        v6 = f["ip_ver"] == 6
        assert tid == (TEMPLATE_V6 if v6 else TEMPLATE_V4)
        for e in ELEMENTS_V6 if v6 else ELEMENTS_V4:
            assert _value(rec[(e.element_id, e.enterprise)], e.name, e.field) == _expected(
                f, e.name, e.field
            ), e.name


def test_ipv6_record_addresses() -> None:
    f = _flows(1)
    f["ip_ver"] = 6
    client, server = ipaddress.IPv6Address("2001:db8::1:2"), ipaddress.IPv6Address("fd00:1::ffff:1")
    f["client_hi"], f["client_lo"] = int(client) >> 64, int(client) & (2**64 - 1)
    f["server_hi"], f["server_lo"] = int(server) >> 64, int(server) & (2**64 - 1)
    (msg,) = _decode_all(IpfixEncoder(), f)
    tid, rec = msg.records[0]
    assert tid == TEMPLATE_V6
    assert address(rec[(27, 0)]) == str(client) and address(rec[(28, 0)]) == str(server)
    assert msg.length == 16 + len(template_set()) + 4 + RECORD_LEN_V6


def test_mtu_splitting_lengths_and_sequence() -> None:
    flows = _flows(1000, v6_every=7)
    enc = IpfixEncoder(mtu=1400)
    raw = [(bytes(m), n) for m, n in enc.messages_for(flows)]
    dec = Decoder()
    seq = 0
    for data, n in raw:
        msg = dec.decode(data)
        assert len(data) == msg.length <= 1400
        assert msg.sequence == seq  # data records sent before this message
        assert len(msg.records) == n
        seq += n
        # full: the next record would not have fitted
        assert msg.length + 4 + RECORD_LEN_V4 > 1400 or data is raw[-1][0]
    assert seq == 1000 == enc.sequence
    assert enc.messages == len(raw)


def test_templates_refresh_by_count_and_time() -> None:
    now = [1000.0]
    enc = IpfixEncoder(mtu=700, refresh_messages=3, refresh_s=30.0, clock=lambda: now[0])
    msgs = _decode_all(enc, _flows(30))
    with_templates = [i for i, m in enumerate(msgs) if m.template_ids]
    assert len(msgs) > 7
    assert with_templates == list(range(0, len(msgs), 3))  # at start, then in every 3rd message
    assert all(m.export_time == 1000 for m in msgs)
    enc = IpfixEncoder(mtu=700, refresh_messages=0, refresh_s=30.0, clock=lambda: now[0])
    dec = Decoder()
    first = [dec.decode(bytes(m)).template_ids for m, _ in enc.messages_for(_flows(10))]
    now[0] += 10
    second = [dec.decode(bytes(m)).template_ids for m, _ in enc.messages_for(_flows(10))]
    now[0] += 25  # 35 s since the templates
    third = [dec.decode(bytes(m)).template_ids for m, _ in enc.messages_for(_flows(10))]
    assert first[0] and not any(first[1:]) and not any(second)
    assert third[0] and not any(third[1:])
    assert enc.template_sends == 2


def test_sets_follow_family_changes_within_a_message() -> None:
    flows = _flows(6, v6_every=2)  # v4, v6, v4, v6...
    (msg,) = _decode_all(IpfixEncoder(mtu=2000), flows)
    assert [t for t, _ in msg.records] == [TEMPLATE_V4, TEMPLATE_V6] * 3
    assert msg.length == 16 + len(template_set()) + 6 * 4 + 3 * (RECORD_LEN_V4 + RECORD_LEN_V6)


def test_sequence_wraps_at_32_bits() -> None:
    enc = IpfixEncoder()
    enc.sequence = 2**32 - 2
    msgs = _decode_all(enc, _flows(5))
    assert msgs[0].sequence == 2**32 - 2 and enc.sequence == 3


def test_bad_settings_are_config_errors() -> None:
    for kwargs in (
        {"mtu": 100},
        {"mtu": 70000},
        {"refresh_messages": -1},
        {"refresh_s": 0},
        {"domain_id": -1},
    ):
        with pytest.raises(ConfigError):
            IpfixEncoder(**kwargs)  # type: ignore[arg-type]
    for url in ("http://x:1", "udp://:4739", "udp://host", "tcp://h:99999", "udp://h:1/path"):
        with pytest.raises(ConfigError):
            parse_target(url)
    assert parse_target("udp://[::1]:4739").url == "udp://[::1]:4739"
    assert exporter_for_cli("udp:/127.0.0.1:4739").url == "udp://127.0.0.1:4739"  # as a Path folds it
    with pytest.raises(ConfigError):
        exporter_for_cli("")
    with pytest.raises(TypeError):
        next(IpfixEncoder().messages_for(np.zeros(3, np.int64)))


def test_udp_sender_counts_refused_sends() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ex = IpfixExporter(f"udp://127.0.0.1:{port}", mtu=700)  # nobody listens: ICMP port unreachable
    for _ in range(5):
        ex.export(_flows(20))
    c = ex.counters
    assert c.errors > 0 and c.records_lost > 0 and "refused" in c.last_error.lower()
    assert c.records + c.records_lost == 100


def test_tcp_templates_once_per_connection_and_lost_when_down() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    ex = IpfixExporter(f"tcp://127.0.0.1:{port}", mtu=1000)
    assert ex.export(_flows(30)) == 30
    assert ex.export(_flows(30)) == 30
    conn, _ = listener.accept()
    ex.close()
    data = b""
    while chunk := conn.recv(65536):
        data += chunk
    conn.close()
    dec, pos, msgs = Decoder(), 0, []
    while pos < len(data):
        length = struct.unpack_from("!H", data, pos + 2)[0]
        msgs.append(dec.decode(data[pos : pos + length]))
        pos += length
    assert sum(len(m.records) for m in msgs) == 60
    assert [bool(m.template_ids) for m in msgs] == [True] + [False] * (len(msgs) - 1)
    listener.close()
    down = IpfixExporter(f"tcp://127.0.0.1:{port}")
    assert down.export(_flows(10)) == 0
    assert down.counters.records_lost == 10 and down.counters.errors == 1


def _read_stream(conn: socket.socket) -> list[Message]:
    data = b""
    while chunk := conn.recv(65536):
        data += chunk
    dec, pos, msgs = Decoder(), 0, []  # a fresh decoder: the connection must bring its own templates
    while pos < len(data):
        length = struct.unpack_from("!H", data, pos + 2)[0]
        msgs.append(dec.decode(data[pos : pos + length]))
        pos += length
    return msgs


def test_tcp_reconnect_sends_the_templates_first() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    ex = IpfixExporter(f"tcp://127.0.0.1:{port}", mtu=1000)
    ex.sender.retry_s = 0.0  # reconnect at once
    assert ex.export(_flows(10)) == 10
    first, _ = listener.accept()
    first.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    assert sum(len(m.records) for m in _read_stream_nonblocking(first)) == 10
    first.close()  # RST: the collector went away
    sent = 0
    for _ in range(20):  # the broken connection is noticed on a send, then a new one is made
        sent += ex.export(_flows(50))
        if ex.sender.connects == 2:
            break
    assert ex.sender.connects == 2 and ex.counters.errors >= 1
    second, _ = listener.accept()
    ex.export(_flows(50))
    ex.close()
    msgs = _read_stream(second)
    assert msgs[0].template_ids, [len(m.records) for m in msgs]  # decodable from its first byte
    assert sum(len(m.records) for m in msgs) > 0
    listener.close()


def _read_stream_nonblocking(conn: socket.socket) -> list[Message]:
    conn.settimeout(1.0)
    data = b""
    try:
        while len(data) < 16 or len(data) < _stream_len(data):
            data += conn.recv(65536)
    except TimeoutError:
        pass
    dec, pos, msgs = Decoder(), 0, []
    while pos < len(data):
        length = struct.unpack_from("!H", data, pos + 2)[0]
        msgs.append(dec.decode(data[pos : pos + length]))
        pos += length
    return msgs


def _stream_len(data: bytes) -> int:
    pos = 0
    while pos + 4 <= len(data):
        pos += struct.unpack_from("!H", data, pos + 2)[0]
    return pos

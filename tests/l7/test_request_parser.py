"""RequestParser on generated conversations: each protocol, pairing, pipelining, timeouts, limits."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from l7_frames import MS, T0, Conversation, parse_frames, texts

from cloudtap.errors import ConfigError
from cloudtap.l7 import RequestConfig
from cloudtap.schema.request import (
    L7_DNS,
    L7_HTTP,
    L7_MYSQL,
    L7_PGSQL,
    L7_REDIS,
    REQ_CLIENT_ERROR,
    REQ_OK,
    REQ_SERVER_ERROR,
    REQ_TIMEOUT,
    REQ_UNANSWERED,
    REQF_SNAPLEN_CUT,
)


def http_get(path: str, host: str = "shop.local", method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: t\r\n\r\n".encode()


def http_resp(code: int, body: bytes = b"") -> bytes:
    return f"HTTP/1.1 {code} X\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body


def test_http_keepalive_pipelining_and_split_body() -> None:
    c = Conversation()
    c.request(T0, http_get("/a") + http_get("/b?q=1"))  # two pipelined requests in one segment
    body = b"x" * 3000
    whole = http_resp(200, body)
    c.response(T0 + 5 * MS, whole[:1400])  # the body continues over two more segments
    c.response(T0 + 6 * MS, whole[1400:2800])
    c.response(T0 + 7 * MS, whole[2800:] + http_resp(404))
    c.request(T0 + 20 * MS, http_get("/c", method="POST"))
    c.response(T0 + 23 * MS, http_resp(503))
    recs, stats = parse_frames(c.frames)
    assert texts(recs, "resource") == ["/a", "/b?q=1", "/c"]
    assert texts(recs, "request_type") == ["GET", "GET", "POST"]
    assert texts(recs, "host") == ["shop.local"] * 3
    assert recs["code"].tolist() == [200, 404, 503]
    assert recs["status"].tolist() == [REQ_OK, REQ_CLIENT_ERROR, REQ_SERVER_ERROR]
    assert recs["latency_us"].tolist() == [5000, 7000, 3000]
    assert set(recs["l7_proto"].tolist()) == {L7_HTTP}
    assert stats["orphan_responses"] == 0


def test_http_retransmitted_request_counts_once_and_head_has_no_body() -> None:
    c = Conversation()
    c.request(T0, http_get("/x", method="HEAD"))
    c.seq[0] -= len(http_get("/x", method="HEAD"))
    c.request(T0 + 1 * MS, http_get("/x", method="HEAD"))  # retransmission: same sequence number
    c.response(T0 + 2 * MS, b"HTTP/1.1 200 OK\r\nContent-Length: 999\r\n\r\n")
    c.request(T0 + 3 * MS, http_get("/y"))
    c.response(T0 + 4 * MS, http_resp(200))
    recs, stats = parse_frames(c.frames)
    assert texts(recs, "resource") == ["/x", "/y"]
    assert recs["latency_us"].tolist() == [2000, 1000]
    assert stats["retransmissions"] == 1


def test_http_timeout_and_unanswered() -> None:
    c = Conversation()
    c.request(T0, http_get("/slow"))
    c.request(T0 + 40_000 * MS, http_get("/late"))  # 40 s later: the first timed out (30 s)
    recs, stats = parse_frames(c.frames, RequestConfig(timeout_s=30))
    assert recs["status"].tolist() == [REQ_TIMEOUT, REQ_UNANSWERED]
    assert recs["resp_ns"].tolist() == [0, 0] and recs["latency_us"].tolist() == [-1, -1]
    assert stats["timeouts"] == 1


def test_http_bounded_queue_counts_overflow() -> None:
    c = Conversation()
    for k in range(5):
        c.request(T0 + k * MS, http_get(f"/{k}"))
    recs, stats = parse_frames(c.frames, RequestConfig(queue=2))
    assert len(recs) == 5 and stats["queue_overflow"] == 3
    assert texts(recs, "resource") == [f"/{k}" for k in range(5)]


def dns_msg(tid: int, name: str, qtype: int = 1, response: bool = False, rcode: int = 0) -> bytes:
    flags = (0x8180 | rcode) if response else 0x0100
    q = (
        b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
        + b"\x00"
        + struct.pack("!HH", qtype, 1)
    )
    return struct.pack("!HHHHHH", tid, flags, 1, 1 if response else 0, 0, 0) + q


def test_dns_udp_pairs_by_id_out_of_order() -> None:
    c = Conversation(sport=53, tcp=False)
    c.request(T0, dns_msg(1, "a.example.com"))
    c.request(T0 + 1 * MS, dns_msg(2, "b.example.com", qtype=28))
    c.request(T0 + 2 * MS, dns_msg(1, "a.example.com"))  # retransmitted query: one request
    c.response(T0 + 3 * MS, dns_msg(2, "b.example.com", 28, True))
    c.response(T0 + 9 * MS, dns_msg(1, "a.example.com", 1, True, rcode=3))
    recs, _ = parse_frames(c.frames)
    assert texts(recs, "resource") == ["a.example.com", "b.example.com"]
    assert texts(recs, "request_type") == ["A", "AAAA"]
    assert recs["latency_us"].tolist() == [9000, 2000]
    assert recs["status"].tolist() == [REQ_CLIENT_ERROR, REQ_OK]
    assert texts(recs, "error") == ["NXDomain", ""]
    assert set(recs["l7_proto"].tolist()) == {L7_DNS}


def test_dns_detected_by_content_on_any_port_and_over_tcp() -> None:
    u = Conversation(sport=8053, tcp=False)
    u.request(T0, dns_msg(7, "svc.internal", qtype=33))
    u.response(T0 + 1 * MS, dns_msg(7, "svc.internal", 33, True))
    t = Conversation(sport=53, cport=41000)
    q1, q2 = dns_msg(8, "x.org"), dns_msg(9, "y.org")
    t.request(T0, struct.pack("!H", len(q1)) + q1 + struct.pack("!H", len(q2)) + q2)
    r2 = dns_msg(9, "y.org", 1, True, rcode=2)
    t.response(T0 + 2 * MS, struct.pack("!H", len(r2)) + r2)
    recs, _ = parse_frames(u.frames + t.frames)
    by_name = dict(zip(texts(recs, "resource"), recs, strict=True))
    assert by_name["svc.internal"]["latency_us"] == 1000
    assert by_name["y.org"]["status"] == REQ_SERVER_ERROR and by_name["x.org"]["status"] == REQ_UNANSWERED


def resp_command(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def test_redis_pipelined_commands_and_errors() -> None:
    c = Conversation(sport=6379)
    c.request(
        T0,
        resp_command(b"set", b"k1", b"v") + resp_command(b"GET", b"k1") + resp_command(b"MGET", b"a", b"b"),
    )
    big = b"$5000\r\n" + b"z" * 5000 + b"\r\n"
    c.response(T0 + 1 * MS, b"+OK\r\n" + big[:1000])
    c.response(T0 + 2 * MS, big[1000:] + b"-WRONGTYPE Operation against a key\r\n")
    recs, _ = parse_frames(c.frames)
    assert texts(recs, "request_type") == ["SET", "GET", "MGET"]
    assert recs["arg_count"].tolist() == [2, 1, 2]
    assert recs["status"].tolist() == [REQ_OK, REQ_OK, REQ_SERVER_ERROR]
    assert texts(recs, "error") == ["", "", "WRONGTYPE"]
    assert recs["latency_us"].tolist() == [1000, 1000, 2000]
    assert set(recs["l7_proto"].tolist()) == {L7_REDIS}


def mysql_packet(seq: int, body: bytes) -> bytes:
    return struct.pack("<I", len(body))[:3] + bytes([seq]) + body


def test_mysql_query_prepare_execute_and_error() -> None:
    c = Conversation(sport=3306)
    c.request(T0, mysql_packet(0, b"\x03SELECT * FROM t WHERE id = 42 AND name = 'bob'"))
    c.response(T0 + 2 * MS, mysql_packet(1, b"\x01") + mysql_packet(2, b"\x03def"))  # result set
    c.request(T0 + 3 * MS, mysql_packet(0, b"\x16UPDATE t SET x = ? WHERE id = ?"))
    c.response(T0 + 4 * MS, mysql_packet(1, b"\x00\x07\x00\x00\x00\x00\x00\x02\x00"))
    c.request(T0 + 5 * MS, mysql_packet(0, b"\x17\x07\x00\x00\x00\x00\x01\x00\x00\x00"))
    c.response(T0 + 6 * MS, mysql_packet(1, b"\xff\x7a\x04#42S02Table 'x' doesn't exist"))
    recs, _ = parse_frames(c.frames)
    assert texts(recs, "request_type") == ["QUERY", "PREPARE", "EXECUTE"]
    assert texts(recs, "resource") == [
        "SELECT * FROM t WHERE id = ? AND name = ?",
        "UPDATE t SET x = ? WHERE id = ?",
        "UPDATE t SET x = ? WHERE id = ?",  # EXECUTE: the text of the statement it runs
    ]
    assert recs["request_id"].tolist() == [0, 7, 7]
    assert recs["code"].tolist() == [0, 0, 1146]
    assert recs["status"].tolist() == [REQ_OK, REQ_OK, REQ_CLIENT_ERROR]
    assert texts(recs, "error") == ["", "", "42S02"]
    assert set(recs["l7_proto"].tolist()) == {L7_MYSQL}


def pg_msg(t: bytes, body: bytes) -> bytes:
    return t + struct.pack("!I", len(body) + 4) + body


def test_pgsql_simple_and_extended_with_error() -> None:
    c = Conversation(sport=5432)
    c.request(T0, pg_msg(b"Q", b"select * from orders where id=17\x00"))
    c.response(T0 + 1 * MS, pg_msg(b"T", b"\x00\x00") + pg_msg(b"C", b"SELECT 1\x00"))
    c.response(T0 + 4 * MS, pg_msg(b"Z", b"I"))
    ext = pg_msg(b"P", b"\x00insert into t values ($1, 'x')\x00\x00\x00") + pg_msg(b"B", b"\x00" * 8)
    c.request(T0 + 10 * MS, ext + pg_msg(b"E", b"\x00\x00\x00\x00\x00") + pg_msg(b"S", b""))
    err = pg_msg(b"E", b"SERROR\x00C23505\x00Mduplicate key\x00\x00")
    c.response(T0 + 12 * MS, err + pg_msg(b"Z", b"I"))
    recs, _ = parse_frames(c.frames)
    assert texts(recs, "request_type") == ["Query", "Execute"]
    assert texts(recs, "resource") == [
        "select * from orders where id=?",
        "insert into t values ($1, ?)",
    ]  # $1 is a parameter, kept
    assert recs["latency_us"].tolist() == [1000, 2000]  # timed to the first message of the reply
    assert recs["status"].tolist() == [REQ_OK, REQ_CLIENT_ERROR]
    assert texts(recs, "error") == ["", "23505"]
    assert set(recs["l7_proto"].tolist()) == {L7_PGSQL}


def test_non_l7_payload_makes_no_request() -> None:
    c = Conversation(sport=443)
    c.request(T0, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(200)))
    c.response(T0 + MS, b"\x16\x03\x03\x00\x5a\x02" + bytes(90))
    recs, stats = parse_frames(c.frames)
    assert len(recs) == 0 and stats["requests"] == 0


def test_snaplen_cut_request_keeps_its_start() -> None:
    c = Conversation()
    c.request(T0, http_get("/" + "p" * 300))
    recs, stats = parse_frames(c.frames, snaplen=120)
    assert texts(recs, "resource") == ["/" + "p" * (120 - 54 - 5)]  # what the 120 bytes held
    assert recs["flags"][0] & REQF_SNAPLEN_CUT
    assert stats["snaplen_cut"] == 1
    garbage = Conversation()
    garbage.request(T0, b"GET nothing-like-a-path" + b"x" * 200)
    recs, _ = parse_frames(garbage.frames, snaplen=100)
    assert len(recs) == 0


def test_config_is_validated() -> None:
    with pytest.raises(ConfigError):
        RequestConfig(queue=0)
    with pytest.raises(ConfigError):
        RequestConfig(timeout_s=0)


def test_many_flows_are_forgotten_when_idle() -> None:
    frames = []
    for k in range(300):
        c = Conversation(cport=20000 + k)
        c.request(T0 + k * 1000 * MS, http_get("/"))
        c.response(T0 + k * 1000 * MS + MS, http_resp(200))
        frames += c.frames
    recs, stats = parse_frames(frames, RequestConfig(max_flows=8, idle_s=2.0))
    assert len(recs) == 300 and (recs["status"] == REQ_OK).all()
    assert stats["table_full"] == 0
    assert np.all(recs["latency_us"] == 1000)

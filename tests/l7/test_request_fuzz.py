"""Garbage and truncated payloads: the kernels never crash and never invent a request.

Random bytes on every parsed protocol's port (and in flows already detected), every prefix of real
messages, and real messages cut by every snap length: any record produced must be the real request
(its type, and a prefix of its resource).
"""

from __future__ import annotations

import csv
import struct
from pathlib import Path

import numpy as np
import pytest
from l7_frames import MS, T0, Conversation, parse_frames, texts
from test_request_parser import dns_msg, http_get, mysql_packet, pg_msg, resp_command

from cloudtap.errors import CaptureError
from cloudtap.l7 import parse_file

PORTS = (80, 53, 3306, 5432, 6379, 8080, 12345)

#: (server port, tcp, real request payload, its request type, its resource)
REAL = [
    (80, True, http_get("/api/v1/orders?id=7"), "GET", "/api/v1/orders?id=7"),
    (53, False, dns_msg(77, "db-01.prod.internal", 28), "AAAA", "db-01.prod.internal"),
    (53, True, struct.pack("!H", 37) + dns_msg(78, "db-01.prod.internal", 1), "A", "db-01.prod.internal"),
    (
        3306,
        True,
        mysql_packet(0, b"\x03SELECT name FROM users WHERE id = 42"),
        "QUERY",
        "SELECT name FROM users WHERE id = ?",
    ),
    (5432, True, pg_msg(b"Q", b"SELECT now()\x00"), "Query", "SELECT now()"),
    (6379, True, resp_command(b"HGETALL", b"session:1"), "HGETALL", "HGETALL"),
]


@pytest.mark.parametrize("seed", range(4))
def test_random_payloads_make_no_requests(seed: int) -> None:
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(1500):
        port = PORTS[k % len(PORTS)]
        c = Conversation(cport=10000 + k, sport=port, tcp=bool(rng.integers(0, 4)))
        for j in range(int(rng.integers(1, 4))):
            size = int(rng.integers(1, 1400))
            c.send(
                T0 + (k * 10 + j) * MS, rng.integers(0, 256, size, dtype=np.uint8).tobytes(), bool(j % 2 == 0)
            )
        frames += c.frames
    records, stats = parse_frames(frames)
    assert len(records) == 0 and stats["requests"] == 0


@pytest.mark.parametrize("seed", range(2))
def test_garbage_inside_detected_flows_invents_nothing(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    frames = []
    for k, (port, tcp, payload, _rtype, _res) in enumerate(REAL * 50):
        c = Conversation(cport=20000 + k, sport=port, tcp=tcp)
        c.request(T0 + k * 100 * MS, payload)
        for j in range(6):
            noise = rng.integers(0, 256, int(rng.integers(1, 600)), dtype=np.uint8).tobytes()
            c.send(T0 + (k * 100 + j + 1) * MS, noise, from_client=bool(j % 2))
        frames += c.frames
    records, _ = parse_frames(frames)
    expected = {(r[3], r[4]) for r in REAL}
    got = set(zip(texts(records, "request_type"), texts(records, "resource"), strict=True))
    assert got <= expected
    assert len(records) == len(REAL) * 50


def test_every_prefix_and_every_snap_length() -> None:
    frames = []
    k = 0
    for port, tcp, payload, _rtype, _res in REAL:
        for cut in range(1, len(payload) + 1):
            c = Conversation(cport=30000 + k % 30000, client=f"10.1.{k // 30000}.1", sport=port, tcp=tcp)
            c.request(T0 + k * MS, payload[:cut])
            frames += c.frames
            k += 1
    records, _ = parse_frames(frames)
    real = {r[3]: r[4] for r in REAL}
    for rtype, resource in zip(texts(records, "request_type"), texts(records, "resource"), strict=True):
        assert rtype in real, rtype
        assert real[rtype].startswith(resource) or resource.startswith(real[rtype].rstrip("?")), resource
    for snap in range(14, 140, 3):
        frames = []
        for j, (port, tcp, payload, _rtype, _res) in enumerate(REAL):
            c = Conversation(cport=40000 + j, sport=port, tcp=tcp)
            c.request(T0 + j * MS, payload)
            c.response(T0 + j * MS + MS, b"HTTP/1.1 200 OK\r\n\r\n" if port == 80 else b"+OK\r\n")
            frames += c.frames
        records, _ = parse_frames(frames, snaplen=snap)
        for rtype, resource in zip(texts(records, "request_type"), texts(records, "resource"), strict=True):
            assert rtype in real and real[rtype].startswith(resource.rstrip("?")), (snap, rtype, resource)


def test_every_shared_capture_parses(shared_pcaps: Path) -> None:
    """Real captures of every kind (tunnels, truncation, malformed frames): no crash, clean errors."""
    with open(shared_pcaps / "MANIFEST.csv", newline="") as fh:
        paths = [shared_pcaps / row["path"] for row in csv.DictReader(fh)]
    parsed = 0
    for path in paths:
        if not path.is_file() or path.stat().st_size > 20_000_000:
            continue
        try:
            result = parse_file(path)
        except CaptureError:
            continue  # a file the reader refuses (bad header/version): a clear error, not a crash
        parsed += 1
        assert (result.requests["l7_proto"] > 0).all()
    assert parsed > 100

"""Backpressure on the agent: a 429/503 ``Retry-After`` is read, honoured, and nothing is lost."""

from __future__ import annotations

import threading
import time
from email.utils import formatdate
from pathlib import Path

import pyarrow as pa
import pytest

from cloudtap.ship.server_sink import ServerSink
from cloudtap.ship.spool import Spool
from cloudtap.ship.transport import MAX_RETRY_AFTER_S, MockTransport, SendResult, parse_retry_after
from cloudtap.ship.wire import decode_batch

httpx = pytest.importorskip("httpx")
from cloudtap.ship.transport import HttpTransport  # noqa: E402


def answering(status: int, headers: dict[str, str]) -> HttpTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json={"detail": "ingest queue full"}, headers=headers)

    return HttpTransport("http://server:8080", token="t", transport=httpx.MockTransport(handler))


@pytest.mark.parametrize(
    ("status", "header", "expected"),
    [(429, "3", 3.0), (503, "1.5", 1.5), (429, None, None), (429, "soon", None), (500, "3", None),
     (429, "100000", MAX_RETRY_AFTER_S)],
)  # fmt: skip
def test_http_reads_retry_after_on_429_and_503(status: int, header: str | None, expected: float | None) -> None:
    transport = answering(status, {} if header is None else {"Retry-After": header})
    result = transport.send("hv-1", 1, b"x")
    transport.close()
    assert (result.ok, result.retry, result.status) == (False, True, status)
    assert result.retry_after_s == expected and result.detail == "ingest queue full"


def test_retry_after_as_http_date() -> None:
    now = time.time()
    assert parse_retry_after(formatdate(now + 30, usegmt=True), now=now) == pytest.approx(30, abs=1)
    assert parse_retry_after(formatdate(now - 30, usegmt=True), now=now) == 0.0
    assert parse_retry_after(" 2 ") == 2.0 and parse_retry_after("") is None and parse_retry_after("-4") == 0.0


def test_sink_waits_retry_after_then_delivers_everything_once(tmp_path: Path) -> None:
    """Throttled twice with ``Retry-After: 0.4``: the batch stays spooled, is not resent sooner, then all arrive."""
    throttles = 2
    attempts: list[tuple[int, float]] = []
    received: list[int] = []
    lock = threading.Lock()

    def handler(agent: str, seq: int, data: bytes) -> SendResult | int:
        nonlocal throttles
        with lock:
            attempts.append((seq, time.monotonic()))
            if throttles > 0:
                throttles -= 1
                return SendResult(False, True, 429, "ingest queue full", retry_after_s=0.4)
            received.append(decode_batch(data).seq)
            return 200

    spool = Spool(tmp_path / "spool", 10_000_000, first_seq=1)
    sink = ServerSink("hv-01", MockTransport(handler), spool, flush_interval_s=60,
                      backoff_initial_s=0.01, backoff_max_s=0.05)  # fmt: skip
    for i in range(3):
        sink.write("flows", pa.table({"n": list(range(i * 10, i * 10 + 10))}))
        sink.rotate()
    sink.close(timeout_s=10)
    stats = sink.stats()
    assert received == [1, 2, 3] and stats.sent_batches == 3 and stats.dead_letters == 0
    assert stats.retries == 2 and stats.pending_batches == 0 and spool.seqs() == []
    first = [t for seq, t in attempts if seq == 1]
    assert len(first) == 3  # 429, 429, 200
    assert all(b - a >= 0.38 for a, b in zip(first, first[1:], strict=False))  # not sooner than Retry-After

"""ServerSink against a real local HTTP ingest server: outages, 5xx, rejects, restarts, spool bounds.

Outages are short (2-3 s of connection refused) with short backoff settings (50 ms doubling to 0.5 s),
standing in for the minutes-long outages of production (same code path, the backoff just caps at 5 s).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from cloudtap.ship.frame import WireError
from cloudtap.ship.server_sink import ServerSink
from cloudtap.ship.spool import Spool
from cloudtap.ship.transport import MockTransport
from cloudtap.ship.wire import WireBatch, decode_batch

httpx = pytest.importorskip("httpx")
from cloudtap.ship.transport import HttpTransport  # noqa: E402

ERSPAN = "deepflow/agent/resources/test/common/decapsulate_erspan1.pcap"
FAST = {"backoff_initial_s": 0.05, "backoff_max_s": 0.5}


class IngestStub:
    """``POST /api/v1/ingest`` like the server: idempotent by (agent, seq), 400 on bad batches.

    The socket is bound at once (the port is reserved and connections are refused) and only listens
    after :meth:`start`, so "server down, then up" needs no port juggling.
    """

    def __init__(self) -> None:
        self.stored: dict[tuple[str, int], WireBatch] = {}
        self.arrivals: list[int] = []  # seqs in the order they were first stored
        self.requests = 0
        self.duplicates = 0
        self.fail_next = 0  # answer 500 to this many requests
        self.reject: set[int] = set()  # seqs answered 400
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server naming
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status, payload = stub.handle(self.path, dict(self.headers), body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler, bind_and_activate=False)
        self.server.daemon_threads = True
        self.server.server_bind()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread: threading.Thread | None = None

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.requests += 1
            if path != "/api/v1/ingest":
                return 404, {"detail": "Not Found"}
            if self.fail_next > 0:
                self.fail_next -= 1
                return 500, {"detail": "store unavailable"}
            try:
                batch = decode_batch(body)
            except WireError as exc:
                return 400, {"detail": str(exc)}
            if (
                headers.get("X-Cloudtap-Seq") != str(batch.seq)
                or headers.get("X-Cloudtap-Agent") != batch.agent_id
            ):
                return 400, {"detail": "identity headers do not match the batch"}
            if batch.seq in self.reject:
                return 400, {"detail": f"batch {batch.seq} rejected by the test"}
            key = (batch.agent_id, batch.seq)
            if key in self.stored:
                self.duplicates += 1
                return 200, {"stored": True, "duplicate": True}
            self.stored[key] = batch
            self.arrivals.append(batch.seq)
            return 200, {"stored": True, "duplicate": False}

    def start(self) -> None:
        self.server.server_activate()
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def stop(self) -> None:
        if self.thread is not None:
            self.server.shutdown()
            self.thread.join()
        self.server.server_close()

    def table(self, kind: str) -> pa.Table:
        """Rows of ``kind`` from every stored batch, in seq order."""
        parts = [b.tables[kind] for _, b in sorted(self.stored.items()) if kind in b.tables]
        return pa.concat_tables(parts)


@pytest.fixture
def stub() -> Any:
    server = IngestStub()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def flows(shared_pcaps: Path) -> pa.Table:
    from cloudtap.meter import meter_file

    table = meter_file(shared_pcaps / ERSPAN).to_arrow()
    assert table.num_rows >= 600
    return table


def chunks(table: pa.Table, size: int) -> list[pa.Table]:
    return [table.slice(i, size) for i in range(0, table.num_rows, size)]


def make_sink(stub: IngestStub, spool_dir: Path, **kw: Any) -> ServerSink:
    spool = Spool(
        spool_dir, kw.pop("max_bytes", 50_000_000), policy=kw.pop("policy", "drop_oldest"), first_seq=1
    )
    kw = {**FAST, "flush_interval_s": 0.1, **kw}
    return ServerSink("hv-01", HttpTransport(stub.url, timeout_s=5), spool, **kw)


def assert_in_order(stub: IngestStub) -> None:
    assert stub.arrivals == sorted(stub.arrivals), "batches must arrive in seq order"
    assert len(set(stub.arrivals)) == len(stub.arrivals)


def test_server_down_then_up_everything_arrives_once_in_order(
    stub: IngestStub, flows: pa.Table, tmp_path: Path
) -> None:
    """~2.5 s of connection refused while the agent keeps writing; then the server comes up."""
    sink = make_sink(stub, tmp_path / "spool", max_batch_rows=100)
    down_since = time.monotonic()
    for part in chunks(flows, 40):
        sink.write("flows", part)
        time.sleep(0.08)
    time.sleep(0.2)
    assert sink.stats().pending_batches > 0 and not stub.stored  # spooled, nothing delivered yet
    assert sink.stats().retries > 0
    time.sleep(max(0.0, 2.5 - (time.monotonic() - down_since)))
    stub.start()
    sink.close(timeout_s=15)
    stats = sink.stats()
    assert stats.pending_batches == 0 and stats.retries > 0
    assert stats.sent_batches == stats.encoded_batches == len(stub.stored)
    assert stub.duplicates == 0
    assert stub.arrivals == list(range(1, stats.encoded_batches + 1))
    assert all(sum(b.rows.values()) <= 100 for b in stub.stored.values())
    assert stub.table("flows").equals(flows)  # nothing lost, nothing doubled, row order kept
    assert sink.bytes_written == stats.encoded_bytes == stats.sent_bytes
    assert not list((tmp_path / "spool").glob("*.batch"))


def test_500_answers_are_retried(stub: IngestStub, flows: pa.Table, tmp_path: Path) -> None:
    stub.fail_next = 3
    stub.start()
    sink = make_sink(stub, tmp_path / "spool", flush_interval_s=60)
    for part in chunks(flows, 200):
        sink.write("flows", part)
        sink.rotate()
    sink.close(timeout_s=10)
    stats = sink.stats()
    assert stats.retries == 3 and stats.dead_letters == 0 and stats.last_status == 200
    assert stub.requests == stats.sent_batches + 3
    assert_in_order(stub)
    assert stub.table("flows").equals(flows)


def test_rejected_batch_is_dead_lettered_and_later_ones_delivered(
    stub: IngestStub, flows: pa.Table, tmp_path: Path
) -> None:
    stub.reject = {2}
    stub.start()
    sink = make_sink(stub, tmp_path / "spool", flush_interval_s=60)
    parts = chunks(flows, 200)
    for part in parts:
        sink.write("flows", part)
        sink.rotate()  # one batch per part: seqs 1..4
    sink.close(timeout_s=10)
    stats = sink.stats()
    assert stats.dead_letters == 1 and stats.retries == 0
    assert "rejected by the test" in stats.last_error
    assert stub.arrivals == [1, 3, 4]
    dead = tmp_path / "spool" / "dead-letter"
    kept = decode_batch((dead / f"{2:020d}.ctap").read_bytes())
    assert kept.tables["flows"].equals(parts[1])
    reason = json.loads((dead / f"{2:020d}.json").read_text())
    assert reason["status"] == 400 and "rejected by the test" in reason["detail"]
    delivered = pa.concat_tables([parts[0], *parts[2:]])
    assert stub.table("flows").equals(delivered)


def test_restart_with_pending_spool_delivers_after_restart(
    stub: IngestStub, flows: pa.Table, tmp_path: Path
) -> None:
    parts = chunks(flows, 200)
    first = make_sink(stub, tmp_path / "spool", flush_interval_s=60)
    for part in parts[:3]:
        first.write("flows", part)
        first.rotate()
    first.close(timeout_s=0.3)  # server down: the batches stay on disk
    assert first.stats().pending_batches == 3 and first.stats().sent_batches == 0
    assert len(list((tmp_path / "spool").glob("*.batch"))) == 3

    stub.start()
    second = make_sink(stub, tmp_path / "spool", flush_interval_s=60)
    second.write("flows", parts[3])
    second.rotate()  # continues the sequence: seq 4
    second.close(timeout_s=10)
    assert second.stats().sent_batches == 4 and second.stats().pending_batches == 0
    assert stub.arrivals == [1, 2, 3, 4]
    assert stub.table("flows").equals(flows)


def test_several_kinds_split_by_max_batch_rows(stub: IngestStub, flows: pa.Table, tmp_path: Path) -> None:
    stub.start()
    edges = pa.table(
        {"time_ns": pa.array(range(250), pa.int64()), "packets_c2s": pa.array([1] * 250, pa.uint64())}
    )
    sink = make_sink(stub, tmp_path / "spool", flush_interval_s=60, max_batch_rows=300)
    sink.write("flows", flows)
    sink.write("edges_1s", edges.slice(0, 100))
    sink.write("edges_1s", edges.slice(100))
    sink.write("edges_60s", edges.slice(0, 0))  # empty tables are skipped
    sink.close(timeout_s=10)
    assert all(sum(b.rows.values()) <= 300 for b in stub.stored.values())
    assert len(stub.stored) == -(-(flows.num_rows + 250) // 300)
    assert stub.table("flows").equals(flows) and stub.table("edges_1s").equals(edges)
    with pytest.raises(ValueError, match="closed"):
        sink.write("flows", flows)
    with pytest.raises(WireError, match="kind unknown"):
        make_sink(stub, tmp_path / "other").write("packets", flows)


def test_drop_oldest_bound_is_counted(flows: pa.Table, tmp_path: Path) -> None:
    """Server down for good with a tiny spool: the oldest batches are dropped and counted."""
    down = MockTransport(lambda agent, seq, data: 503)
    spool = Spool(tmp_path / "spool", 40_000, first_seq=1)
    sink = ServerSink("hv-01", down, spool, flush_interval_s=60, **FAST)
    for part in chunks(flows, 100):
        sink.write("flows", part)
        sink.rotate()
    stats = sink.stats()
    sink.close(timeout_s=0.2)
    assert stats.dropped_batches > 0 and stats.encoded_batches == 7
    assert stats.pending_batches + stats.dropped_batches == 7
    assert stats.pending_bytes <= 40_000
    assert spool.seqs() == list(range(8 - stats.pending_batches, 8))  # the newest are kept


def test_block_policy_waits_instead_of_dropping(flows: pa.Table, tmp_path: Path) -> None:
    """With ``block`` a full spool stalls the writer until the server accepts again; nothing is dropped."""
    accepting = threading.Event()
    received: list[WireBatch] = []

    def handler(agent: str, seq: int, data: bytes) -> int:
        if not accepting.is_set():
            return 503
        received.append(decode_batch(data))
        return 200

    spool = Spool(tmp_path / "spool", 40_000, policy="block", first_seq=1)
    sink = ServerSink("hv-01", MockTransport(handler), spool, flush_interval_s=60, **FAST)
    threading.Timer(1.0, accepting.set).start()
    started = time.monotonic()
    for part in chunks(flows, 100):
        sink.write("flows", part)
        sink.rotate()  # blocks while the spool is full
    stalled = time.monotonic() - started
    sink.close(timeout_s=10)
    stats = sink.stats()
    assert stalled >= 0.5 and stats.dropped_batches == 0 and stats.dropped_rows == 0
    assert [b.seq for b in received] == list(range(1, 8))
    assert pa.concat_tables([b.tables["flows"] for b in received]).equals(flows)


def test_oversized_batch_is_split_to_fit_the_spool(flows: pa.Table, tmp_path: Path) -> None:
    received: list[WireBatch] = []
    spool = Spool(tmp_path / "spool", 25_000, policy="block", first_seq=1)
    transport = MockTransport(lambda agent, seq, data: received.append(decode_batch(data)) or 200)
    sink = ServerSink("hv-01", transport, spool, flush_interval_s=60, **FAST)
    sink.write("flows", flows)  # one batch would encode to ~56 kB, over the 25 kB spool bound
    sink.close(timeout_s=10)
    assert len(received) >= 2 and all(b.frame_bytes <= 25_000 for b in received)
    assert sink.stats().dropped_batches == 0 and sink.stats().dropped_rows == 0
    assert pa.concat_tables([b.tables["flows"] for b in received]).equals(flows)

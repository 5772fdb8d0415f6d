"""ServerSink: the agent's :class:`~cloudtap.agent.sinks.RecordSink` that ships records to the server.

``write`` buffers tables. Every ``flush_interval_s`` (and on ``rotate``/``close``, or sooner once
``max_batch_rows`` rows are buffered) everything buffered is encoded into batches of at most
``max_batch_rows`` rows, each with the spool's next sequence number, and appended to the on-disk
spool *before* anything is sent. A sender thread sends spooled batches strictly in sequence order:
on success (200, including "duplicate") the batch is acked and deleted; on a retryable failure
(connection refused, timeout, 5xx, 429...) the same batch is retried with exponential backoff
(jittered, capped at ``backoff_max_s``), and never sooner than the server's ``Retry-After`` (a 429
when its ingest queue is full: the batch stays spooled, counted in ``retries``); a batch the server
rejects (400/413/422...) is moved to the dead-letter folder, counted, and the next batch goes on. ``close`` flushes, tries to drain the spool
for ``timeout_s`` and leaves the rest on disk: the next start sends it first.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa

from cloudtap.ship.frame import WireError, check_kind, read_header
from cloudtap.ship.spool import Spool, SpoolFull
from cloudtap.ship.transport import SendResult, Transport
from cloudtap.ship.wire import encode_batch

log = logging.getLogger(__name__)


@dataclass
class ShipStats:
    """Counters of one :class:`ServerSink` (cumulative since it started)."""

    encoded_batches: int = 0
    encoded_rows: int = 0
    encoded_bytes: int = 0
    sent_batches: int = 0
    sent_bytes: int = 0
    duplicates: int = 0  #: batches the server already had (resent after a crash or lost answer)
    retries: int = 0  #: failed sends that will be tried again
    dead_letters: int = 0
    dropped_batches: int = 0  #: spool bound hit (drop_oldest) or a batch that could not be stored
    dropped_bytes: int = 0
    dropped_rows: int = 0  #: rows lost before encoding (block policy timing out at close)
    pending_batches: int = 0
    pending_bytes: int = 0
    buffered_rows: int = 0
    last_status: int = 0
    last_error: str = ""

    def as_dict(self) -> dict[str, object]:
        """Plain dict (for status endpoints and metrics)."""
        return asdict(self)


class ServerSink:
    """Buffers, spools and ships record tables to the server (thread-safe)."""

    def __init__(
        self,
        agent_id: str,
        transport: Transport,
        spool: Spool,
        flush_interval_s: float = 1.0,
        max_batch_rows: int = 65536,
        backoff_initial_s: float = 0.1,
        backoff_max_s: float = 5.0,
        dead_letter_dir: str | Path | None = None,
        dead_letter_keep: int = 1000,
        max_buffer_rows: int | None = None,
    ) -> None:
        """Start the flusher and sender threads (the sender first delivers what a previous run left).

        Args:
            agent_id: identity written into every batch.
            transport: where batches go; the sink closes it on ``close``.
            spool: the on-disk queue; the sink closes it on ``close``.
            flush_interval_s: how often buffered tables become a batch.
            max_batch_rows: most rows (all kinds together) in one batch.
            backoff_initial_s: first retry delay; doubles per failure up to ``backoff_max_s``.
            backoff_max_s: longest retry delay.
            dead_letter_dir: where rejected batches go (default ``<spool>/dead-letter``).
            dead_letter_keep: newest rejected batches kept there.
            max_buffer_rows: ``write`` waits while this many rows wait to be encoded (default 8 batches).
        """
        if max_batch_rows <= 0 or flush_interval_s <= 0:
            raise ValueError("max_batch_rows and flush_interval_s must be > 0")
        encode_batch(agent_id, 0, {})  # raises WireError now for an unusable agent_id, not in a thread
        self.agent_id = agent_id
        self.transport = transport
        self.spool = spool
        self.flush_interval_s = flush_interval_s
        self.max_batch_rows = max_batch_rows
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.dead_letter_dir = Path(dead_letter_dir) if dead_letter_dir else spool.directory / "dead-letter"
        self.dead_letter_keep = dead_letter_keep
        self.max_buffer_rows = max_buffer_rows or 8 * max_batch_rows
        self.bytes_written = 0
        self._stats = ShipStats()
        self._cond = threading.Condition()
        self._buffers: dict[str, list[pa.Table]] = {}
        self._buffered_rows = 0
        self._flush_lock = threading.Lock()
        self._flush_now = threading.Event()
        self._stop_flusher = threading.Event()
        self._stop_sender = threading.Event()
        self._closed = False
        self._close_deadline: float | None = None
        self._failing = False
        self._flusher = threading.Thread(target=self._flush_loop, name="cloudtap-ship-flush", daemon=True)
        self._sender = threading.Thread(target=self._send_loop, name="cloudtap-ship-send", daemon=True)
        self._flusher.start()
        self._sender.start()

    # -- RecordSink -------------------------------------------------------------------------------

    def write(self, kind: str, table: pa.Table) -> None:
        """Buffer ``table`` for stream ``kind``; it is shipped with the next flush.

        Raises:
            WireError: ``kind`` is not a stream name.
            ValueError: the sink is closed.
        """
        check_kind(kind)
        if table.num_rows == 0:
            return
        with self._cond:
            if self._closed:
                raise ValueError("ServerSink is closed")
            while self._buffered_rows >= self.max_buffer_rows and not self._closed:
                self._flush_now.set()
                self._cond.wait(0.1)  # back-pressure: the spool is full under the block policy
            self._buffers.setdefault(kind, []).append(table)
            self._buffered_rows += table.num_rows
            if self._buffered_rows >= self.max_batch_rows:
                self._flush_now.set()

    def rotate(self) -> None:
        """Encode and spool everything buffered now."""
        self.flush()

    def close(self, timeout_s: float = 5.0) -> None:
        """Flush, try to deliver every spooled batch within ``timeout_s``, then stop.

        What is not delivered stays in the spool and is sent first by the next ServerSink on it.
        """
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        deadline = time.monotonic() + timeout_s
        self._close_deadline = deadline
        self._stop_flusher.set()
        self._flush_now.set()
        self._flusher.join()
        self.flush(deadline=deadline)
        while self.spool.pending_batches and time.monotonic() < deadline and self._sender.is_alive():
            time.sleep(0.01)
        self._stop_sender.set()
        self._sender.join(timeout=max(0.5, deadline - time.monotonic()))
        if self._sender.is_alive():
            log.warning(
                "ship: sender still busy after close; %d batches stay spooled", self.spool.pending_batches
            )
            return
        self.transport.close()
        self.spool.close()

    # -- flushing ---------------------------------------------------------------------------------

    def flush(self, deadline: float | None = None) -> int:
        """Encode everything buffered into batches and append them to the spool.

        Args:
            deadline: under the ``block`` policy, give up waiting for spool room at this monotonic time
                (the rows are then counted in ``dropped_rows``); None waits as long as needed.
        Returns:
            Batches appended.
        """
        with self._flush_lock:
            with self._cond:
                buffers, self._buffers = self._buffers, {}
                self._buffered_rows = 0
                self._cond.notify_all()
            appended = 0
            for tables in _split(buffers, self.max_batch_rows):
                appended += self._append(tables, deadline)
            return appended

    def _append(self, tables: dict[str, pa.Table], deadline: float | None) -> int:
        """Spool one batch; a batch over the spool bound is split in halves until it fits."""
        cache: dict[int, bytes] = {}

        def build(seq: int) -> bytes:
            if seq not in cache:
                cache.clear()
                cache[seq] = encode_batch(self.agent_id, seq, tables)
            return cache[seq]

        rows = sum(t.num_rows for t in tables.values())
        while True:
            limit = deadline if deadline is not None else self._close_deadline
            # Block policy without a deadline: wait in slices, to notice close() and its deadline.
            timeout = 0.5 if limit is None else max(0.0, limit - time.monotonic())
            try:
                self.spool.append(build, timeout_s=timeout)
                break
            except SpoolFull:
                size = len(next(iter(cache.values()))) if cache else 0
                if size > self.spool.max_bytes:
                    if rows > 1:
                        return sum(self._append(half, deadline) for half in _halves(tables))
                    log.error("ship: a single row encodes to %d bytes, over the spool bound; dropped", size)
                elif limit is None or time.monotonic() < limit:
                    continue  # block policy: keep waiting for the sender to make room
                else:
                    log.error("ship: spool still full at close; %d rows dropped", rows)
                self._stats.dropped_batches += 1
                self._stats.dropped_rows += rows
                self._stats.dropped_bytes += size
                return 0
        data = next(iter(cache.values()))
        self.bytes_written += len(data)
        self._stats.encoded_batches += 1
        self._stats.encoded_rows += rows
        self._stats.encoded_bytes += len(data)
        return 1

    def _flush_loop(self) -> None:
        while not self._stop_flusher.is_set():
            self._flush_now.wait(self.flush_interval_s)
            self._flush_now.clear()
            if self._stop_flusher.is_set():
                return
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - keep flushing; the error is logged
                log.exception("ship: flush failed")

    # -- sending ----------------------------------------------------------------------------------

    def _send_loop(self) -> None:
        backoff = self.backoff_initial_s
        while not self._stop_sender.is_set():
            if self.spool.closed:
                return
            try:
                item = self.spool.peek()
            except OSError as exc:  # unreadable spool (permissions, I/O error): keep trying
                log.error("ship: cannot read the spool: %s", exc)
                self._stop_sender.wait(self.backoff_max_s)
                continue
            if item is None:
                self.spool.wait(0.05)
                continue
            seq, data = item
            try:
                header = read_header(data)
            except WireError as exc:
                self._dead_letter(seq, data, SendResult(False, False, 0, f"unreadable spooled batch: {exc}"))
                continue
            try:
                result = self.transport.send(header.agent_id, header.seq, data)
            except Exception as exc:  # noqa: BLE001 - a transport bug must not kill the sender
                result = SendResult(False, True, 0, f"{type(exc).__name__}: {exc}")
            self._stats.last_status = result.status
            if result.ok:
                self.spool.ack(seq)
                self._stats.sent_batches += 1
                self._stats.sent_bytes += len(data)
                self._stats.duplicates += int(result.detail == "duplicate")
                backoff = self.backoff_initial_s
                if self._failing:
                    log.info("ship: server reachable again (batch %d delivered)", header.seq)
                    self._failing = False
            elif result.retry:
                self._stats.retries += 1
                self._stats.last_error = result.detail or f"HTTP {result.status}"
                if not self._failing:
                    log.warning(
                        "ship: cannot deliver batch %d (%s); retrying", header.seq, self._stats.last_error
                    )
                    self._failing = True
                delay = backoff * random.uniform(0.5, 1.0)
                if result.retry_after_s is not None:  # the server said when (429 throttling, 503): not sooner
                    delay = max(delay, result.retry_after_s)
                self._stop_sender.wait(delay)
                backoff = min(backoff * 2, self.backoff_max_s)
            else:
                self._dead_letter(seq, data, result)

    def _dead_letter(self, seq: int, data: bytes, result: SendResult) -> None:
        """Keep a rejected batch (and why) in the dead-letter folder, then drop it from the spool."""
        self._stats.dead_letters += 1
        self._stats.last_error = f"rejected: HTTP {result.status} {result.detail}".strip()
        log.error("ship: batch %d rejected (HTTP %d: %s); dead-lettered", seq, result.status, result.detail)
        try:
            self.dead_letter_dir.mkdir(parents=True, exist_ok=True)
            (self.dead_letter_dir / f"{seq:020d}.ctap").write_bytes(data)
            reason = {
                "agent_id": self.agent_id,
                "seq": seq,
                "status": result.status,
                "detail": result.detail,
                "time_ns": time.time_ns(),
            }
            (self.dead_letter_dir / f"{seq:020d}.json").write_text(
                json.dumps(reason) + "\n", encoding="utf-8"
            )
            self._prune_dead_letters()
        except OSError as exc:
            log.error("ship: cannot write dead letter %d: %s", seq, exc)
        self.spool.ack(seq)

    def _prune_dead_letters(self) -> None:
        batches = sorted(self.dead_letter_dir.glob("*.ctap"))
        for old in batches[: max(0, len(batches) - self.dead_letter_keep)]:
            old.unlink(missing_ok=True)
            old.with_suffix(".json").unlink(missing_ok=True)

    # -- status -----------------------------------------------------------------------------------

    def stats(self) -> ShipStats:
        """A snapshot of the counters (spool drops included)."""
        snap = ShipStats(**asdict(self._stats))
        snap.dropped_batches += self.spool.dropped_batches
        snap.dropped_bytes += self.spool.dropped_bytes
        snap.pending_batches = self.spool.pending_batches
        snap.pending_bytes = self.spool.pending_bytes
        snap.buffered_rows = self._buffered_rows
        return snap


def _split(buffers: dict[str, list[pa.Table]], max_rows: int) -> list[dict[str, pa.Table]]:
    """Cut buffered tables into batches of at most ``max_rows`` rows, keeping each kind's row order.

    A table whose schema differs from the previous one of its kind starts a new batch.
    """
    batches: list[dict[str, list[pa.Table]]] = []
    current: dict[str, list[pa.Table]] = {}
    room = max_rows
    for kind, parts in buffers.items():
        for table in parts:
            previous = current.get(kind)
            if previous and not previous[-1].schema.equals(table.schema):
                batches.append(current)
                current, room = {}, max_rows
            offset = 0
            while offset < table.num_rows:
                take = min(room, table.num_rows - offset)
                current.setdefault(kind, []).append(table.slice(offset, take))
                offset += take
                room -= take
                if room == 0:
                    batches.append(current)
                    current, room = {}, max_rows
    if current:
        batches.append(current)
    return [{kind: pa.concat_tables(parts) for kind, parts in batch.items()} for batch in batches]


def _halves(tables: dict[str, pa.Table]) -> list[dict[str, pa.Table]]:
    total = sum(t.num_rows for t in tables.values())
    first: dict[str, pa.Table] = {}
    second: dict[str, pa.Table] = {}
    room = total // 2
    for kind, table in tables.items():
        take = min(room, table.num_rows)
        if take:
            first[kind] = table.slice(0, take)
        if table.num_rows - take:
            second[kind] = table.slice(take)
        room -= take
    return [first, second]

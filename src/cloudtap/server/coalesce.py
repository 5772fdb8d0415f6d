"""Coalescer: batches from many agents, arriving within a few ms, stored as one insert per table.

The HTTP handler reads the frame's header (agent, seq) and awaits :meth:`Coalescer.submit`; the
one writer thread decodes and checks each batch, tags each merged block once, and stores. The first batch of a group opens a window of ``wait_s``; every batch
arriving meanwhile joins (up to ``max_batches`` / ``max_rows``); then one writer thread stores the
group (``ingest_group.insert_group``, write-ahead file first) and answers every waiter. While a group
is being written the next one fills, so groups grow with the load. A group is immutable once closed:
if its insert fails, its waiters get the error and the group waits, with its write-ahead file, for
one of its members to be resent (or for the next start), then is written again as the same group.

A bad batch never holds the others back: one that cannot be decoded is left out (400, or 503 alone
when memory ran out); one whose tagging fails goes in untagged alone; one the store refuses is
found by splitting the group (``insert_group``) and refused alone (400). Only an error that says
the store is unavailable (``ingest_group.store_unavailable``) fails the whole group (503).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pyarrow as pa

from cloudtap.server.ingest import IngestError, Ingestor
from cloudtap.server.ingest_group import PreparedBatch, group_digest, insert_alone, insert_group, logged_keys
from cloudtap.server.ingest_wal import GroupWal, WalRecord
from cloudtap.server.metrics.distribution import GROUP_BUCKETS, Distribution
from cloudtap.server.store.base import BatchKey, InsertResult

log = logging.getLogger(__name__)


def lower_thread_priority(nice: int) -> None:
    """Run the calling thread ``nice`` steps nicer than it is (Linux: priority is per thread); 0 = unchanged.

    The storage threads (decoding, inserting) yield the CPU to the event loop that answers heartbeats and
    command polls whenever both want it; they still get every idle cycle.
    """
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except OSError as exc:  # a sandbox may refuse it: run at the same priority
        log.warning("cannot lower the priority of ingest thread %d: %s", tid, exc)


@dataclass(eq=False)
class Group:
    """Batches stored together; ``digest`` is set once written ahead (multi-member groups)."""

    members: list[PreparedBatch] = field(default_factory=list)
    waiters: dict[BatchKey, list[asyncio.Future[InsertResult]]] = field(default_factory=dict)
    opened: float = 0.0
    rows: int = 0
    digest: str | None = None
    split_from: int | None = None
    state: str = "open"  #: open, queued, running, failed


@dataclass(frozen=True)
class QueueDepth:
    """What waits in the coalescer: batches not answered yet, groups closed but not written, failed groups."""

    batches: int
    groups: int
    failed_groups: int


class Coalescer:
    """Coalesces concurrent ingest batches (one per event loop; the writer is one thread).

    Args:
        ingestor: decodes, tags, counts; its store receives the inserts.
        wait_s: how long the first batch of a group waits for others.
        max_batches, max_rows: a group closes early when it reaches either.
        wal: write-ahead files of multi-member groups (None: no crash safety for merged groups; tests).
    """

    def __init__(
        self, ingestor: Ingestor, wait_s: float, max_batches: int = 1000, max_rows: int = 2_000_000,
        wal: GroupWal | None = None, decode_threads: int = 2, thread_nice: int = 0,
    ) -> None:  # fmt: skip
        self.ingestor = ingestor
        self.wait_s = wait_s
        self.max_batches = max_batches
        self.max_rows = max_rows
        self.wal = wal
        self.groups_written = 0  #: inserts done (each one block per table)
        self.group_sizes = Distribution(GROUP_BUCKETS)  #: batches written per group
        nicer = {"initializer": lower_thread_priority, "initargs": (thread_nice,)}
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="cloudtap-ingest", **nicer)  # type: ignore[arg-type]
        self._decoders = ThreadPoolExecutor(decode_threads, thread_name_prefix="cloudtap-decode", **nicer)  # type: ignore[arg-type]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._by_key: dict[BatchKey, Group] = {}
        self._queue: collections.deque[Group] = collections.deque()
        self._open: Group | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._recovered = False
        self._ready: asyncio.Future[None] | None = None

    async def submit(self, batch: PreparedBatch) -> InsertResult:
        """Store ``batch`` with others; returns once it is durable (or raises what refused it).

        Raises:
            IngestError: the store refused this batch's data (a 4xx).
            Exception: the insert failed (store unavailable...): a 5xx, the agent resends.
        """
        await self._start()
        assert self._loop is not None and self._wake is not None
        fut: asyncio.Future[InsertResult] = self._loop.create_future()
        group = self._by_key.get(batch.key)
        if group is not None:  # a resend of a batch already in a group: wait for (or retry) that group
            group.waiters.setdefault(batch.key, []).append(fut)
            if group.state == "failed":
                group.state = "queued"
                self._queue.append(group)
                self._wake.set()
            return await fut
        if self._open is None:
            self._open = Group(opened=self._loop.time())
            self._wake.set()
        if batch.tables is None and batch.decoding is None:  # decoded while the group fills and the one
            batch.decoding = self._decoders.submit(self._decode_one, batch)  # before it is written
        group = self._open
        group.members.append(batch)
        group.rows += batch.num_rows
        group.waiters[batch.key] = [fut]
        self._by_key[batch.key] = group
        if len(group.members) >= self.max_batches or group.rows >= self.max_rows:
            self._close_open()
        return await fut

    def depth(self) -> QueueDepth:
        """The queue now (read from any thread: a snapshot, not a lock)."""
        try:
            groups = list(self._by_key.values())
        except RuntimeError:  # changed while read (another thread): the next scrape sees it
            groups = []
        failed = len({id(g) for g in groups if g.state == "failed"})
        return QueueDepth(batches=len(groups), groups=len(self._queue), failed_groups=failed)

    def holds(self, key: BatchKey) -> bool:
        """Whether batch ``key`` waits here already (a resend joins it: it adds nothing to the queue)."""
        return key in self._by_key

    def close(self) -> None:
        """Stop the writer thread (pending groups stay in their write-ahead files)."""
        if self._task is not None:
            self._task.cancel()
        self._executor.shutdown(wait=True)
        self._decoders.shutdown(wait=True)

    # -- writer ----------------------------------------------------------------------------------
    async def _start(self) -> None:
        """Start the writer on this loop; the first start replays the WAL before any submit goes on."""
        loop = asyncio.get_running_loop()
        if self._loop is loop and self._ready is not None:
            await asyncio.shield(self._ready)
            if self._task is not None and not self._task.done():
                return
        self._loop, self._wake = loop, asyncio.Event()
        self._ready = loop.create_future()
        self._queue.clear()
        self._open = None
        self._by_key = {k: g for k, g in self._by_key.items() if g.state == "failed"}
        try:
            if not self._recovered:
                for group in await loop.run_in_executor(self._executor, self._load_wal):
                    group.state = "queued"
                    self._queue.append(group)
                    for m in group.members:
                        self._by_key[m.key] = group
                self._recovered = True
            self._task = loop.create_task(self._writer())
        finally:
            self._ready.set_result(None)

    def _load_wal(self) -> list[Group]:
        """Groups left in write-ahead files by an earlier run (replayed before anything new)."""
        groups = []
        for record in self.wal.pending() if self.wal is not None else []:
            try:
                members = [self.ingestor.prepare_bytes(frame, tag=False) for frame in record.frames]
            except IngestError as exc:  # cannot happen for a frame that was accepted once; keep the file
                log.error("write-ahead group %s cannot be decoded: %s", record.digest, exc)
                continue
            groups.append(Group(members=members, digest=record.digest, split_from=record.split_from))
        if groups:
            log.warning("replaying %d coalesced insert(s) left by an earlier run", len(groups))
        return groups

    def _close_open(self) -> None:
        if self._open is not None:
            self._open.state = "queued"
            self._queue.append(self._open)
            self._open = None
            assert self._wake is not None
            self._wake.set()

    async def _writer(self) -> None:
        assert self._loop is not None and self._wake is not None
        loop, wake = self._loop, self._wake
        while True:
            if self._queue:
                await self._run(self._queue.popleft())
                continue
            wake.clear()
            if self._open is not None:
                delay = self._open.opened + self.wait_s - loop.time()
                if delay <= 0:
                    self._close_open()
                    continue
                try:
                    await asyncio.wait_for(wake.wait(), delay)
                except TimeoutError:
                    pass
                continue
            await wake.wait()

    async def _run(self, group: Group) -> None:
        assert self._loop is not None
        group.state = "running"
        try:
            results = await self._loop.run_in_executor(self._executor, self._write, group)
        except Exception as exc:  # the group stays, with its WAL file, until a member is resent
            group.state = "failed"
            self.ingestor.stats.last_error = f"coalesced insert failed: {type(exc).__name__}: {exc}"
            log.warning("coalesced insert of %d batch(es) failed: %s", len(group.members), exc)
            for futs in group.waiters.values():
                for fut in futs:
                    if not fut.done():
                        fut.set_exception(exc)
            group.waiters = {}
            kept = {m.key for m in group.members}  # batches left out (refused, stored before) start afresh
            for key in [k for k, g in self._by_key.items() if g is group and k not in kept]:
                del self._by_key[key]
            return
        for key in [m.key for m in group.members] + list(group.waiters):
            if self._by_key.get(key) is group:
                del self._by_key[key]
        for key, futs in group.waiters.items():
            result = results.get(key) or RuntimeError("batch left out of its group, resend")
            for i, fut in enumerate(futs):
                if fut.done():
                    continue
                if isinstance(result, Exception):
                    fut.set_exception(result)
                elif i == 0:
                    fut.set_result(result)
                else:  # a second request for the same batch is its replay
                    replay = InsertResult(rows=result.rows, duplicate=True)
                    self.ingestor.count(replay)
                    fut.set_result(replay)
        group.waiters = {}

    def _write(self, group: Group) -> dict[BatchKey, InsertResult | Exception]:
        """Decode and store one group (writer thread); every member gets a result."""
        results: dict[BatchKey, InsertResult | Exception] = {}
        left_out = self._decode_members(group)
        store = self.ingestor.store
        decoded = {m.key: m for m in group.members}
        with self.ingestor.write_lock, self.ingestor.insert_timings["coalesced"].time():
            if group.digest is None and len(group.members) > 1:  # new group: leave out batches stored before
                done = logged_keys(store, [m.key for m in group.members])
                for m in group.members:
                    if m.key in done:
                        results[m.key] = InsertResult(rows=m.rows, duplicate=True)
                group.members = [m for m in group.members if m.key not in done]
            if len(group.members) == 1 and group.digest is None:  # alone: the per-batch path, its own token
                m = group.members[0]
                alone = insert_alone(store, m.key, self.ingestor.tag(m.tables or {}))
                results[m.key] = _refusal(alone) if isinstance(alone, Exception) else alone
            elif group.members:
                self._write_merged(group, results)
        self.groups_written += 1
        self.group_sizes.observe(len(decoded))
        for key, result in results.items():
            if isinstance(result, IngestError):
                self.ingestor.rejected(result.reason, f"batch {key.agent_id}:{key.seq} refused: {result}", key.agent_id)
            elif not isinstance(result, Exception):
                member = decoded.get(key)
                frame = member.frame if member is not None else b""
                self.ingestor.count(result, member.tables if member is not None else None, len(frame))
        return {**results, **left_out}

    def _decode_members(self, group: Group) -> dict[BatchKey, Exception]:
        """Decode the members not decoded yet; those that fail are left out of the group, each with its error.

        Each batch's decode starts on arrival, in the decode threads (decompressing and reading Arrow release the
        GIL), so it overlaps the insert of the group before; here the writer waits for the rest. The event loop
        only read the frame headers.
        """
        left_out: dict[BatchKey, Exception] = {}
        started = [m for m in group.members if m.decoding is not None]
        todo = [m for m in group.members if m.tables is None and m.decoding is None]
        outcomes = self._decoders.map(self._decode_one, todo) if len(todo) > 1 else map(self._decode_one, todo)
        errors = [*zip(todo, outcomes, strict=True), *((m, m.decoding.result()) for m in started if m.decoding)]
        for m, error in errors:
            m.decoding = None
            if error is not None:
                left_out[m.key] = error
        group.members = [m for m in group.members if m.key not in left_out]
        return left_out

    def _decode_one(self, m: PreparedBatch) -> Exception | None:
        """Decode one member in place; the error that leaves it out of its group, if any."""
        try:
            m.tables = self.ingestor.prepare_bytes(m.frame, m.key.agent_id, m.key.seq, tag=False).tables
        except IngestError as exc:  # counted by prepare_bytes
            return exc
        except MemoryError as exc:  # not the batch's fault: it alone is answered 503 and resent
            log.warning("batch %s:%d left out of its group: %r", m.key.agent_id, m.key.seq, exc)
            return exc
        except Exception as exc:  # an unexpected reader error: refuse this batch, not its group
            detail = f"malformed batch: cannot be read: {type(exc).__name__}: {exc}"
            self.ingestor.rejected("malformed", detail, m.key.agent_id)
            return IngestError(detail, "malformed")
        return None

    def _write_merged(self, group: Group, results: dict[BatchKey, InsertResult | Exception]) -> None:
        store = self.ingestor.store
        if group.digest is None:
            group.digest = group_digest([m.key for m in group.members])
            self._write_ahead(group)

        def on_split(index: int) -> None:
            group.split_from = index
            self._write_ahead(group)

        def on_tag_error(key: BatchKey, exc: Exception) -> None:
            self.ingestor.tag_failed(exc, f"batch {key.agent_id}:{key.seq}")

        members, digest = group.members, group.digest
        outcome = insert_group(store, members, digest, group.split_from, on_split, self._tag, on_tag_error)
        for key, result in outcome.results.items():
            results[key] = _refusal(result) if isinstance(result, Exception) else result
        if self.wal is not None:
            self.wal.remove(group.digest)

    def _tag(self, kind: str, table: pa.Table) -> pa.Table:
        """Cloud ids of one table; raises when tagging fails (``insert_group`` isolates who is at fault)."""
        tagger = self.ingestor.tagger
        if tagger is None:
            return table
        tagged: pa.Table = tagger.tag_tables({kind: table})[kind]
        return tagged

    def _write_ahead(self, group: Group) -> None:
        if self.wal is not None and group.digest is not None:
            members = [(m.key.agent_id, m.key.seq) for m in group.members]
            self.wal.write(WalRecord(group.digest, members, [m.frame for m in group.members], group.split_from))


def _refusal(error: Exception) -> IngestError:
    """A batch the store refused (its data): a 400 for its agent."""
    return IngestError(str(error), "refused by store")

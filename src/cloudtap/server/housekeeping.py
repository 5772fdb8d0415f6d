"""Retention the server enforces: ``storage`` settings to a store policy, and the disk budget on a schedule.

* **TTL** (``storage.retention_days`` caps, ``storage.ttl_days`` per table): table TTLs, set when the
  store is migrated with :func:`retention_policy` (``ALTER ... MODIFY TTL`` when the settings changed).
  ClickHouse (embedded chDB too) deletes expired rows in background merges; nothing to schedule.
* **Disk budget** (``storage.max_disk_gib``): needs a caller. :class:`Housekeeper` runs
  ``store.enforce_disk_budget`` every ``storage.housekeeping_s`` in a daemon thread and keeps what it
  did (runs, errors, partitions and bytes dropped, data size) for ``/metrics``, and remembers each
  dropped partition (table, the record-time range it held, when) for "why is there no data for VM X?".
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

from cloudtap.server.settings import ServerSettings, StorageSection
from cloudtap.server.store.retention import DroppedPartition, RetentionPolicy

log = logging.getLogger(__name__)
GIB = 1 << 30
#: dropped partitions remembered (newest kept)
KEEP_DROPS = 500


@dataclass(frozen=True)
class DropRecord:
    """A partition the disk budget dropped: which, the record time it held (epoch s, UTC), and when."""

    table: str
    partition_id: str
    bytes: int
    time_from: float | None  #: start of the partition's record time (None: the id is not a day or month)
    time_to: float | None  #: end (exclusive)
    dropped_at: float

    def as_dict(self) -> dict[str, Any]:
        return {"table": self.table, "partition_id": self.partition_id, "bytes": self.bytes,
                "time_from": self.time_from, "time_to": self.time_to, "dropped_at": self.dropped_at}  # fmt: skip


def partition_range(partition_id: str) -> tuple[float, float] | None:
    """The UTC time range of a ``toYYYYMMDD`` (one day) or ``toYYYYMM`` (one month) partition id."""
    try:
        if len(partition_id) == 8 and partition_id.isdigit():
            start = datetime.strptime(partition_id, "%Y%m%d").replace(tzinfo=UTC)
            return start.timestamp(), start.timestamp() + 86_400
        if len(partition_id) == 6 and partition_id.isdigit():
            start = datetime.strptime(partition_id, "%Y%m").replace(tzinfo=UTC)
            end = start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
            return start.timestamp(), end.timestamp()
    except ValueError:
        return None
    return None


def retention_policy(storage: StorageSection) -> RetentionPolicy:
    """The store's retention policy from the ``storage`` settings."""
    return RetentionPolicy(
        ttl_days=dict(storage.ttl_days),
        disk_budget_bytes=int(storage.max_disk_gib * GIB) if storage.max_disk_gib > 0 else None,
        max_days=storage.retention_days,
    )


@runtime_checkable
class RetentionStore(Protocol):
    """What the housekeeper needs from a store (``ClickHouseStore`` has it)."""

    def enforce_disk_budget(self, budget_bytes: int | None = None) -> list[DroppedPartition]: ...

    def data_bytes(self) -> int: ...


@dataclass(frozen=True)
class HousekeepingRun:
    """One pass: when, how long, what was dropped, the data size after it, or the error."""

    started: float  #: epoch seconds
    duration_s: float
    dropped: list[DroppedPartition] = field(default_factory=list)
    data_bytes: int | None = None
    error: str | None = None

    @property
    def dropped_bytes(self) -> int:
        """Bytes of the partitions dropped in this run."""
        return sum(d.bytes for d in self.dropped)


class Housekeeper:
    """Enforces the disk budget every ``period_s`` seconds in a daemon thread (:meth:`start`/:meth:`stop`).

    Counters for ``/metrics`` (read them with :meth:`snapshot`, or the attributes directly):
    ``runs``, ``errors``, ``dropped_partitions_total``, ``dropped_bytes_total``,
    ``dropped_partitions_by_table`` / ``dropped_bytes_by_table`` (table -> count / bytes),
    ``last_run`` (epoch seconds the last run ended), ``last_duration_s``, ``last_dropped``,
    ``last_error`` / ``last_error_at``, ``data_bytes`` (after the last run), ``budget_bytes``.

    A store without ``enforce_disk_budget``/``data_bytes`` (test doubles) makes it inert. A failing run
    is logged and counted, never raised; the next one runs on schedule.

    Args:
        store: the open store (the caller owns its lifetime: stop the housekeeper before closing it).
        settings: server settings (or their ``storage`` section): ``max_disk_gib``, ``housekeeping_s``.
        period_s: overrides ``storage.housekeeping_s``.
        initial_delay_s: wait before the first run (default: one period; the server just migrated).
    """

    def __init__(
        self,
        store: Any,
        settings: ServerSettings | StorageSection,
        period_s: float | None = None,
        initial_delay_s: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        storage = settings.storage if isinstance(settings, ServerSettings) else settings
        self.store = store
        self.enabled = isinstance(store, RetentionStore)
        self.period_s = float(storage.housekeeping_s if period_s is None else period_s)
        if self.period_s <= 0:
            raise ValueError(f"housekeeping period must be positive, got {self.period_s}")
        self.initial_delay_s = self.period_s if initial_delay_s is None else max(0.0, initial_delay_s)
        self.budget_bytes: int | None = retention_policy(storage).disk_budget_bytes
        self._clock = clock
        self._lock = threading.Lock()
        self._run_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.runs = 0
        self.errors = 0
        self.dropped_partitions_total = 0
        self.dropped_bytes_total = 0
        self.dropped_partitions_by_table: dict[str, int] = {}
        self.dropped_bytes_by_table: dict[str, int] = {}
        self.last_run: float | None = None
        self.last_duration_s: float | None = None
        self.last_dropped: list[DroppedPartition] = []
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.data_bytes: int | None = None
        self._drops: deque[DropRecord] = deque(maxlen=KEEP_DROPS)

    def drops(self, since: float | None = None, tables: tuple[str, ...] | None = None) -> list[DropRecord]:
        """Partitions dropped (oldest first; the last ``KEEP_DROPS``), at or after ``since``, of ``tables``."""
        with self._lock:
            found = list(self._drops)
        return [d for d in found if (since is None or d.dropped_at >= since) and (tables is None or d.table in tables)]

    # -- one pass ----------------------------------------------------------------------------------
    def run_once(self) -> HousekeepingRun:
        """Enforce the budget now (if any) and measure the data; records the outcome and returns it."""
        started = self._clock()
        t0 = time.monotonic()
        dropped: list[DroppedPartition] = []
        size: int | None = None
        error: str | None = None
        with self._run_lock:  # a manual run and the scheduled one never overlap
            try:
                if self.enabled:
                    if self.budget_bytes is not None:
                        dropped = list(self.store.enforce_disk_budget(self.budget_bytes))
                    size = int(self.store.data_bytes())
            except Exception as exc:  # the thread must survive a store hiccup; the next run retries
                text = str(exc).strip()
                error = f"{type(exc).__name__}: {text.splitlines()[0][:300]}" if text else type(exc).__name__
                log.warning("housekeeping failed: %s", error)
        run = HousekeepingRun(started, time.monotonic() - t0, dropped, size, error)
        self._record(run)
        if dropped:
            log.warning(
                "disk budget %.2f GiB: dropped %d partition(s), %.1f MiB: %s",
                (self.budget_bytes or 0) / GIB, len(dropped), run.dropped_bytes / (1 << 20),
                ", ".join(f"{d.table}/{d.partition_id}" for d in dropped),
            )  # fmt: skip
        return run

    def _record(self, run: HousekeepingRun) -> None:
        with self._lock:
            self.runs += 1
            self.last_run = run.started + run.duration_s
            self.last_duration_s = run.duration_s
            if run.error is not None:
                self.errors += 1
                self.last_error, self.last_error_at = run.error, run.started
                return
            self.last_dropped = list(run.dropped)
            if run.data_bytes is not None:
                self.data_bytes = run.data_bytes
            at = run.started + run.duration_s
            for d in run.dropped:
                span = partition_range(d.partition_id)
                self._drops.append(DropRecord(d.table, d.partition_id, d.bytes, span[0] if span else None,
                                              span[1] if span else None, at))  # fmt: skip
                self.dropped_partitions_total += 1
                self.dropped_bytes_total += d.bytes
                by_count, by_bytes = self.dropped_partitions_by_table, self.dropped_bytes_by_table
                by_count[d.table] = by_count.get(d.table, 0) + 1
                by_bytes[d.table] = by_bytes.get(d.table, 0) + d.bytes

    def snapshot(self) -> dict[str, Any]:
        """A consistent copy of the counters (for ``/metrics`` and status pages)."""
        with self._lock:
            return {
                "enabled": self.enabled,
                "running": self.running,
                "period_s": self.period_s,
                "budget_bytes": self.budget_bytes,
                "runs": self.runs,
                "errors": self.errors,
                "dropped_partitions_total": self.dropped_partitions_total,
                "dropped_bytes_total": self.dropped_bytes_total,
                "dropped_partitions_by_table": dict(self.dropped_partitions_by_table),
                "dropped_bytes_by_table": dict(self.dropped_bytes_by_table),
                "last_run": self.last_run,
                "last_duration_s": self.last_duration_s,
                "last_dropped": [
                    {"table": d.table, "partition_id": d.partition_id, "bytes": d.bytes}
                    for d in self.last_dropped
                ],
                "last_error": self.last_error,
                "last_error_at": self.last_error_at,
                "data_bytes": self.data_bytes,
            }

    # -- schedule ----------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """True while the background thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the background thread (no-op when inert or already running)."""
        if not self.enabled or self.running:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="cloudtap-housekeeper", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the thread; waits for a run in progress (at most ``timeout_s``)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout_s)
            if thread.is_alive():
                log.warning("housekeeper still busy after %.0f s; left to finish on its own", timeout_s)

    def _loop(self) -> None:
        delay = self.initial_delay_s
        while not self._stop.wait(delay):
            t0 = time.monotonic()
            self.run_once()
            delay = max(0.0, self.period_s - (time.monotonic() - t0))

    def __enter__(self) -> Housekeeper:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["GIB", "DropRecord", "Housekeeper", "HousekeepingRun", "RetentionStore", "partition_range",
           "retention_policy"]

"""Spool: a bounded on-disk FIFO of encoded batches that survives agent restarts.

Layout of the spool directory::

    <seq:020d>.batch     one batch: payload + 16-byte trailer (b"CTSP", payload length, CRC-32, 0)
    .<seq:020d>.part     a batch being written (renamed to .batch once fsync'd)
    next_seq             the next sequence number (written atomically on every append)
    quarantine/          half-written or damaged files found at start or on read, kept for inspection
    .lock                flock'd while a Spool has the directory open (one agent per spool)

``append`` writes the payload to a ``.part`` file, fsyncs it, renames it atomically to ``.batch`` and
fsyncs the directory, so a batch is either completely in the spool or not at all. Acked batches are
unlinked without a directory fsync: after a crash an acked batch may come back and be sent again,
which the server's (agent_id, seq) idempotency absorbs.

Bound (``max_bytes``, counting payload bytes of pending batches), two policies:

* ``drop_oldest`` (default): the oldest pending batches are deleted to make room and counted in
  ``dropped_batches`` / ``dropped_bytes``. The agent keeps capturing; during a long server outage it
  loses the oldest records, never the newest.
* ``block``: ``append`` waits until the sender acks enough batches (or ``timeout_s`` passes, then
  :class:`SpoolFull`). The agent's record output stalls, its capture rings fill and the kernel drops
  packets (visible as kernel drops): records are never lost, packets are.

A batch larger than ``max_bytes`` is refused with :class:`SpoolFull` under both policies.

Sequence numbers grow by one per append and are never reused, even after the spool has been emptied
or its directory wiped: a fresh spool starts at the wall-clock time in microseconds (unless
``first_seq`` is given), so the server, which discards a (agent_id, seq) it has stored before, never
mistakes new records for a replay.
"""

from __future__ import annotations

import fcntl
import os
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable
from pathlib import Path

from cloudtap.errors import CloudtapError, ConfigError

POLICIES = ("drop_oldest", "block")
SUFFIX = ".batch"
_TRAILER = struct.Struct("<4sQII")
TRAILER_BYTES = _TRAILER.size
_TRAILER_MAGIC = b"CTSP"
_SEQ_FILE = "next_seq"
_QUARANTINE = "quarantine"


class SpoolFull(CloudtapError):
    """A batch does not fit in the spool (larger than the bound, or ``block`` timed out)."""


class Spool:
    """Bounded, crash-safe FIFO of batches keyed by sequence number (thread-safe)."""

    def __init__(
        self,
        directory: str | Path,
        max_bytes: int,
        policy: str = "drop_oldest",
        first_seq: int | None = None,
        fsync: bool = True,
    ) -> None:
        """Open (or create) a spool and recover what a previous run left in it.

        Args:
            directory: spool folder (created if missing); one agent per folder.
            max_bytes: bound on the payload bytes of pending batches.
            policy: ``drop_oldest`` or ``block`` (see module doc).
            first_seq: sequence number of the first batch of a fresh spool (default: now in microseconds).
            fsync: fsync files and the directory (turn off only in tests).
        """
        if policy not in POLICIES:
            raise ConfigError(f"unknown spool policy {policy!r} (one of {', '.join(POLICIES)})")
        if max_bytes <= 0:
            raise ConfigError(f"spool max_bytes must be > 0, got {max_bytes}")
        self.directory = Path(directory)
        self.max_bytes = int(max_bytes)
        self.policy = policy
        self.fsync = fsync
        self.dropped_batches = 0
        self.dropped_bytes = 0
        self.quarantined_files = 0
        self._cond = threading.Condition()
        self._append_lock = threading.Lock()  # one append at a time: seqs are stored in order
        self._index: deque[tuple[int, int]] = deque()  # (seq, payload bytes), oldest first
        self._sizes: dict[int, int] = {}
        self._pending_bytes = 0
        self._closed = False
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            (self.directory / _QUARANTINE).mkdir(exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create spool directory {self.directory}: {exc.strerror}") from exc
        self._lock_fd = self._take_lock()
        self._next_seq = self._recover(first_seq)

    # -- public API -------------------------------------------------------------------------------

    @property
    def pending_bytes(self) -> int:
        """Payload bytes of batches not acked yet."""
        return self._pending_bytes

    @property
    def pending_batches(self) -> int:
        """Batches not acked yet."""
        return len(self._index)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    @property
    def next_seq(self) -> int:
        """Sequence number the next append will get."""
        return self._next_seq

    def append(self, data: bytes | Callable[[int], bytes], timeout_s: float | None = None) -> int:
        """Store one batch durably at the tail.

        Args:
            data: the batch, or a function of the batch's sequence number returning it (so the batch
                can carry its own seq).
            timeout_s: with ``block``, how long to wait for room (None: forever).
        Returns:
            The batch's sequence number.
        Raises:
            SpoolFull: the batch is larger than ``max_bytes``, or ``block`` timed out.
        """
        with self._append_lock, self._cond:
            self._check_open()
            seq = self._next_seq
            payload = data(seq) if callable(data) else data
            size = len(payload)
            if size > self.max_bytes:
                raise SpoolFull(f"batch of {size} bytes exceeds the spool bound of {self.max_bytes} bytes")
            self._make_room(size, timeout_s)
            self._write_batch(seq, payload)
            self._next_seq = seq + 1
            self._write_next_seq()
            self._index.append((seq, size))
            self._sizes[seq] = size
            self._pending_bytes += size
            self._cond.notify_all()
            return seq

    def peek(self) -> tuple[int, bytes] | None:
        """The oldest pending batch, or None when the spool is empty.

        A batch whose file fails its length/CRC check is quarantined and skipped.
        """
        with self._cond:
            while self._index:
                seq, size = self._index[0]
                path = self._path(seq)
                try:
                    raw = path.read_bytes()
                except FileNotFoundError:
                    self._forget(seq)
                    continue
                payload = _unwrap(raw)
                if payload is None:
                    self._forget(seq)
                    self._quarantine(path)
                    continue
                return seq, payload
            return None

    def ack(self, seq: int) -> None:
        """Remove batch ``seq`` (delivered or dead-lettered); unknown seqs are ignored."""
        with self._cond:
            if seq not in self._sizes:
                return
            self._forget(seq)
            self._path(seq).unlink(missing_ok=True)
            self._cond.notify_all()

    def wait(self, timeout_s: float) -> bool:
        """Wait until a batch is pending (True) or ``timeout_s`` passes (False)."""
        with self._cond:
            return self._cond.wait_for(lambda: bool(self._index) or self._closed, timeout_s) and bool(
                self._index
            )

    def seqs(self) -> list[int]:
        """Pending sequence numbers, oldest first."""
        with self._cond:
            return [seq for seq, _ in self._index]

    def close(self) -> None:
        """Release the directory lock; pending batches stay on disk for the next start."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        os.close(self._lock_fd)

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals --------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"spool {self.directory} is closed")

    def _make_room(self, size: int, timeout_s: float | None) -> None:
        if self.policy == "drop_oldest":
            while self._index and self._pending_bytes + size > self.max_bytes:
                seq, old = self._index[0]
                self._forget(seq)
                self._path(seq).unlink(missing_ok=True)
                self.dropped_batches += 1
                self.dropped_bytes += old
            return
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self._pending_bytes + size > self.max_bytes:
            self._check_open()
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise SpoolFull(
                    f"spool full ({self._pending_bytes} of {self.max_bytes} bytes pending) after waiting {timeout_s} s"
                )
            self._cond.wait(remaining)

    def _forget(self, seq: int) -> None:
        size = self._sizes.pop(seq, None)
        if size is None:
            return
        self._pending_bytes -= size
        if self._index and self._index[0][0] == seq:
            self._index.popleft()
        else:
            self._index = deque(item for item in self._index if item[0] != seq)

    def _path(self, seq: int) -> Path:
        return self.directory / f"{seq:020d}{SUFFIX}"

    def _write_batch(self, seq: int, payload: bytes) -> None:
        tmp = self.directory / f".{seq:020d}.part"
        trailer = _TRAILER.pack(_TRAILER_MAGIC, len(payload), zlib.crc32(payload), 0)
        with open(tmp, "wb") as fh:
            fh.write(payload)
            fh.write(trailer)
            fh.flush()
            if self.fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, self._path(seq))
        self._sync_dir()

    def _write_next_seq(self) -> None:
        tmp = self.directory / f".{_SEQ_FILE}.tmp"
        with open(tmp, "w", encoding="ascii") as fh:
            fh.write(f"{self._next_seq}\n")
            fh.flush()
            if self.fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, self.directory / _SEQ_FILE)
        self._sync_dir()

    def _sync_dir(self) -> None:
        if not self.fsync:
            return
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _take_lock(self) -> int:
        fd = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise ConfigError(f"spool {self.directory} is in use by another process (or Spool)") from None
        return fd

    def _quarantine(self, path: Path) -> None:
        self.quarantined_files += 1
        try:
            os.replace(path, self.directory / _QUARANTINE / path.name)
        except OSError:
            path.unlink(missing_ok=True)

    def _recover(self, first_seq: int | None) -> int:
        """Index complete batches, quarantine half-written ones, restore the sequence counter."""
        found: list[tuple[int, int]] = []
        highest = -1
        for path in self.directory.iterdir():
            name = path.name
            if name == f".{_SEQ_FILE}.tmp":
                path.unlink(missing_ok=True)
                continue
            if name.endswith(".part"):
                self._quarantine(path)
                continue
            if not name.endswith(SUFFIX) or not path.is_file():
                continue
            stem = name[: -len(SUFFIX)]
            if not stem.isdigit():
                continue
            seq = int(stem)
            highest = max(highest, seq)
            size = _complete_size(path)
            if size is None:
                self._quarantine(path)
                continue
            found.append((seq, size))
        for path in (self.directory / _QUARANTINE).iterdir():
            stem = path.name.lstrip(".").split(".")[0]
            if stem.isdigit():
                highest = max(highest, int(stem))
        found.sort()
        self._index = deque(found)
        self._sizes = dict(found)
        self._pending_bytes = sum(size for _, size in found)
        stored = _read_int(self.directory / _SEQ_FILE)
        if stored is None and highest < 0:
            start = time.time_ns() // 1000 if first_seq is None else int(first_seq)
        else:
            start = max(stored or 0, highest + 1)
        if self.policy == "drop_oldest":
            self._make_room(0, None)  # the bound may have shrunk since the last run
        return start


def _complete_size(path: Path) -> int | None:
    """Payload size of a spool file if its trailer says it is complete (CRC is checked on read)."""
    try:
        total = path.stat().st_size
        if total < TRAILER_BYTES:
            return None
        with open(path, "rb") as fh:
            fh.seek(total - TRAILER_BYTES)
            magic, length, _crc, _zero = _TRAILER.unpack(fh.read(TRAILER_BYTES))
    except OSError:
        return None
    if magic != _TRAILER_MAGIC or length != total - TRAILER_BYTES:
        return None
    return int(length)


def _unwrap(raw: bytes) -> bytes | None:
    if len(raw) < TRAILER_BYTES:
        return None
    magic, length, crc, _zero = _TRAILER.unpack_from(raw, len(raw) - TRAILER_BYTES)
    payload = raw[: len(raw) - TRAILER_BYTES]
    if magic != _TRAILER_MAGIC or length != len(payload) or zlib.crc32(payload) != crc:
        return None
    return payload


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None

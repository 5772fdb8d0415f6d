"""PacketStore: the agent's rolling packet store on local disk, indexed by time, interface and flow.

Write path (capture threads): :meth:`PacketStore.append` receives each decoded batch (frames and their
``PACKET_DTYPE`` rows), keeps the frames of the selected interfaces cut at the snap length, and copies
them into the open block (one numba call per batch). A block holds ``block_kib`` of frame bytes; when
full (or older than ``seal_after_s``) it is sealed and queued for the writer thread. When more than
``max_pending_mib`` wait for the disk, new blocks are dropped and counted: the capture never waits.

On disk (``packet_segments``): ``seg-NNNNNNNN.ctpk`` segments of blocks (``packet_blocks``), each with a
``seg-NNNNNNNN.idx`` of fixed-size index records, and ``interfaces.json`` (``packet_interfaces``: store
interface id -> name, VM domain, link types). The oldest segment is deleted whenever the files exceed
``max_disk_mib``.

Read path: :meth:`PacketStore.query` plans a :class:`~cloudtap.agent.packet_query.PacketQuery`, which
reads only the blocks whose index may hold matching packets and yields time-ordered FrameBatches or a
pcapng stream.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from cloudtap.agent import _packet_kernels as K
from cloudtap.agent.config import PacketsSection
from cloudtap.agent.packet_blocks import OpenBlock
from cloudtap.agent.packet_interfaces import InterfaceTable, PointNamer, StoredInterface, point_namer
from cloudtap.agent.packet_query import PacketQuery, PacketQueryTooLarge
from cloudtap.agent.packet_segments import SegmentFiles
from cloudtap.capture.bpf import FrameFilter, vlan_aware
from cloudtap.capture.frames import FrameBatch

__all__ = [  # the store's API, including the names of its parts it hands out
    "PacketFilter",
    "PacketQuery",
    "PacketQueryTooLarge",
    "PacketStore",
    "PacketStoreStats",
    "PointNamer",
    "StoredInterface",
    "point_namer",
]

log = logging.getLogger(__name__)

_MAX_SEGMENT = 256 << 20
#: ``PacketFilter`` of the meter pipeline: ``(frames, packets) -> keep mask``.
PacketFilter = Callable[[FrameBatch, np.ndarray], np.ndarray]


@dataclasses.dataclass
class PacketStoreStats:
    """Counters of the store (cumulative since the agent started; disk figures are current)."""

    packets_written: int = 0
    bytes_written: int = 0  #: frame bytes stored (after the snap length)
    blocks_written: int = 0
    not_selected_packets: int = 0  #: frames of interfaces the policy does not keep
    dropped_packets: int = 0  #: frames lost because the disk did not keep up (or failed)
    dropped_bytes: int = 0
    write_errors: int = 0
    evicted_segments: int = 0
    evicted_packets: int = 0
    evicted_bytes: int = 0
    segments: int = 0
    disk_bytes: int = 0
    stored_packets: int = 0
    oldest_ns: int = 0
    newest_ns: int = 0
    queries: int = 0
    blocks_read: int = 0
    blocks_skipped: int = 0
    last_error: str = ""


class PacketStore:
    """Rolling, indexed packet store of one agent (thread-safe: many writers, many readers)."""

    def __init__(self, config: PacketsSection, names: PointNamer | None = None) -> None:
        """Open (or create, when enabled) the store in ``config.directory``; recover its index.

        Args:
            config: the ``packets`` section.
            names: names capture point ids (default: ``if<id>``).
        """
        self.config = config
        self.stats = PacketStoreStats()
        self._lock = threading.RLock()  # open block, index, interfaces, counters
        self._io_lock = threading.Lock()  # segment files: write, rotate, evict
        self._interfaces = InterfaceTable(config.directory, names or (lambda pid: (f"if{pid}", None)), self.stats)
        self._files = SegmentFiles(config.directory, self._lock, self.stats)
        self._open: OpenBlock | None = None
        self._queue: queue.Queue[tuple[bytes, np.ndarray, int] | None] = queue.Queue()
        self._pending_bytes = 0
        self._writer: threading.Thread | None = None
        self._started = False
        self._closed = False
        if config.enabled or config.directory.is_dir():
            self._start()

    # -- sizes ----------------------------------------------------------------------------------------
    @property
    def block_bytes(self) -> int:
        """Frame bytes per block."""
        return self.config.block_kib << 10

    @property
    def budget_bytes(self) -> int:
        """Disk budget in bytes."""
        return self.config.max_disk_mib << 20

    @property
    def segment_bytes(self) -> int:
        """A segment is rotated beyond this size (an eighth of the budget, at least two blocks)."""
        return int(min(_MAX_SEGMENT, max(self.budget_bytes // 8, 2 * (self.block_bytes + 64))))

    @property
    def snaplen(self) -> int:
        """Bytes kept per frame (never more than a block)."""
        return min(self.config.snaplen, self.block_bytes)

    @property
    def directory(self) -> Path:
        return self.config.directory

    # -- start / recover -----------------------------------------------------------------------------
    def _start(self) -> None:
        if self._started:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        self._recover()
        self._writer = threading.Thread(target=self._write_loop, name="packet-store", daemon=True)
        self._writer.start()
        self._started = True

    def _recover(self) -> None:
        self._interfaces.load()
        self._files.recover()
        with self._io_lock:
            self._files.evict(self.budget_bytes)

    # -- configuration -------------------------------------------------------------------------------
    def configure(self, **changes: object) -> PacketsSection:
        """Change the store's settings live (``enabled``, ``interfaces``, ``snaplen``, ``max_disk_mib``).

        The interface selection applies to the next batch; a smaller budget evicts at once. The
        directory and block size take effect only at the next start.

        Returns:
            The settings now in force.

        Raises:
            ValueError: an unknown or invalid key.
        """
        live = {"enabled", "interfaces", "snaplen", "max_disk_mib"}
        unknown = set(changes) - live
        if unknown:
            raise ValueError(f"packet store: cannot change {sorted(unknown)} live (only {sorted(live)})")
        data = self.config.model_dump()
        data.update(changes)
        config = PacketsSection.model_validate(data)
        with self._lock:
            self.config = config
            self._interfaces.forget_points()
        if config.enabled:
            self._start()
        else:
            self.seal()
        if self._started:
            with self._io_lock:
                self._files.evict(self.budget_bytes)
        return config

    # -- write path ----------------------------------------------------------------------------------
    def tap(self, previous: PacketFilter | None = None) -> PacketFilter:
        """A pipeline ``packet_filter`` that stores what ``previous`` keeps (or everything) and keeps it."""

        def store_filter(frames: FrameBatch, packets: np.ndarray) -> np.ndarray:
            keep = previous(frames, packets) if previous is not None else None
            self.append(frames, packets, keep)
            return keep if keep is not None else np.ones(len(frames), np.bool_)

        return store_filter

    def append(self, frames: FrameBatch, packets: np.ndarray, keep: np.ndarray | None = None) -> int:
        """Store the frames of ``frames`` (where ``keep``) whose interface the policy selects.

        Args:
            frames: the batch (its buffer may be reused after the call: frames are copied).
            packets: ``PACKET_DTYPE[len(frames)]``, the decoded rows of the frames.
            keep: optional mask of frames to consider (e.g. after dedup).

        Returns:
            Frames accepted into the store.
        """
        if not self.config.enabled or self._closed or len(frames) == 0:
            return 0
        sel = np.flatnonzero(keep) if keep is not None else np.arange(len(frames), dtype=np.int64)
        with self._lock:
            pids = frames.interface[sel]
            sids = self._interfaces.store_ids(pids, self.config.interfaces)
            ok = sids >= 0
            n_ok = int(np.count_nonzero(ok))
            self.stats.not_selected_packets += sel.shape[0] - n_ok
            if n_ok < sel.shape[0]:
                sel, sids = sel[ok], sids[ok]
            sids = sids.astype(np.uint16)
            snaplen = self.snaplen
            i = 0
            total = sel.shape[0]
            while i < total:
                blk = self._open
                if blk is None:
                    blk = self._open = OpenBlock(self.block_bytes)
                chunk = sel[i : i + blk.room]
                n0 = blk.n
                copied, pos = K.gather(frames.data, frames.offset, frames.cap_len, chunk, snaplen, blk.data, blk.pos,
                                       blk.cap[n0:])  # fmt: skip
                if copied:
                    rows = chunk[:copied]
                    blk.ts[n0 : n0 + copied] = frames.ts_ns[rows]
                    blk.wire[n0 : n0 + copied] = frames.wire_len[rows]
                    blk.iface[n0 : n0 + copied] = sids[i : i + copied]
                    blk.linktype[n0 : n0 + copied] = frames.linktype[rows]
                    blk.flags |= K.index_packets(packets, rows, blk.bloom, blk.ifaces, sids[i : i + copied])
                    blk.n += copied
                    blk.pos = pos
                    i += copied
                if copied < chunk.shape[0] or blk.room == 0:
                    self._seal_locked()
        return int(sel.shape[0])

    def seal(self) -> None:
        """Close the open block and queue it for the disk (so it becomes readable)."""
        with self._lock:
            self._seal_locked()

    def _seal_locked(self) -> None:
        blk, self._open = self._open, None
        if blk is None or blk.n == 0:
            return
        pairs = np.unique((blk.iface[: blk.n].astype(np.uint32) << 16) | blk.linktype[: blk.n])
        self._interfaces.add_linktypes(pairs)
        body, rec = blk.encode()
        if self._pending_bytes + len(body) > (self.config.max_pending_mib << 20) or not self._started:
            self.stats.dropped_packets += blk.n
            self.stats.dropped_bytes += blk.pos
            return
        self._pending_bytes += len(body)
        self._queue.put((body, rec, blk.n))

    def housekeeping(self, max_age_s: float = 1.0) -> None:
        """Seal a block older than ``max_age_s``; re-read interface names every 10 s (VM identity)."""
        now = time.monotonic()
        with self._lock:
            if self._open is not None and self._open.n and now - self._open.opened >= max_age_s:
                self._seal_locked()
            self._interfaces.refresh_names(now)

    def sync(self, timeout_s: float = 10.0) -> bool:
        """Seal the open block and wait until every queued block is on disk; False on timeout."""
        self.seal()
        deadline = time.monotonic() + timeout_s
        while self._pending_bytes > 0:
            if time.monotonic() > deadline or self._writer is None or not self._writer.is_alive():
                return False
            time.sleep(0.002)
        return True

    def close(self) -> None:
        """Flush everything to disk and stop the writer thread."""
        if self._closed:
            return
        self.sync()
        self._closed = True
        if self._writer is not None:
            self._queue.put(None)
            self._writer.join(10.0)
        with self._io_lock:
            self._files.close_segment()

    # -- the writer thread ----------------------------------------------------------------------------
    def _write_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            body, rec, n = item
            try:
                with self._io_lock:
                    self._write_block(body, rec)
                    self._files.evict(self.budget_bytes)
            except OSError as exc:
                with self._lock:
                    self.stats.write_errors += 1
                    self.stats.dropped_packets += n
                    self.stats.dropped_bytes += int(rec["data_len"][0])
                    self.stats.last_error = f"packet store write: {exc}"
                log.error("packet store: cannot write a block: %s", exc)
            finally:
                with self._lock:
                    self._pending_bytes -= len(body)

    def _write_block(self, body: bytes, rec: np.ndarray) -> None:
        self._files.write_block(body, rec, self.segment_bytes)

    # -- read path --------------------------------------------------------------------------------------
    def interfaces(self) -> list[StoredInterface]:
        """Every interface the store has kept packets of."""
        with self._lock:
            return self._interfaces.snapshot()

    def index(self) -> np.ndarray:
        """A copy of the block index (``INDEX_DTYPE``), oldest block first."""
        with self._lock:
            return self._files.rows().copy()

    def query(
        self, from_ns: int, to_ns: int, bpf: str | None = None, interfaces: Sequence[str] | None = None
    ) -> PacketQuery:
        """Plan a query: packets with ``from_ns <= ts < to_ns`` on ``interfaces`` that match ``bpf``.

        Args:
            from_ns: window start (ns since the epoch, inclusive).
            to_ns: window end (exclusive).
            bpf: tcpdump filter (None: every packet); without a ``vlan`` keyword it also matches inside
                802.1Q tags (:func:`~cloudtap.capture.bpf.vlan_aware`).
            interfaces: interface names, VM domains or globs of either (None: all).

        Raises:
            FilterError: the filter does not compile.
        """
        # tagged and untagged frames alike (VM ports on a VLAN trunk): see vlan_aware
        frame_filter = FrameFilter(vlan_aware(bpf)) if bpf and bpf.strip() else None
        if self._started and to_ns > self._oldest_unwritten():
            self.sync(timeout_s=5.0)
        with self._lock:
            rows = self._files.rows().copy()
            ifaces = self._interfaces.snapshot()
            self.stats.queries += 1
        wanted = [i for i in ifaces if i.matches(interfaces)]
        return PacketQuery(self, rows, wanted, int(from_ns), int(to_ns), bpf, frame_filter)

    def count_blocks(self, read: int = 0, skipped: int = 0) -> None:
        """Add a query's blocks read and skipped to the stats."""
        with self._lock:
            self.stats.blocks_read += read
            self.stats.blocks_skipped += skipped

    def _oldest_unwritten(self) -> int:
        with self._lock:
            blk = self._open
            low = int(blk.ts[: blk.n].min()) if blk is not None and blk.n else np.iinfo(np.int64).max
            return low if self._pending_bytes == 0 else np.iinfo(np.int64).min

    def read(
        self,
        window_from_ns: int,
        window_to_ns: int,
        bpf: str | None = None,
        interfaces: Sequence[str] | None = None,
        max_bytes: int | None = None,
    ) -> Iterator[tuple[str, int, bytes]]:
        """Stored packets as ``(interface label, ts_ns, frame bytes)``, in time order (convenience API).

        Raises:
            PacketQueryTooLarge: the matching frames exceed ``max_bytes`` (checked before yielding).
        """
        q = self.query(window_from_ns, window_to_ns, bpf, interfaces)
        q.check_size(max_bytes)
        labels = {i.store_id: i.label for i in q.interfaces}
        for fb in q.batches():
            data = fb.data
            for iface, ts, off, n in zip(fb.interface.tolist(), fb.ts_ns.tolist(), fb.offset.tolist(),
                                         fb.cap_len.tolist(), strict=True):  # fmt: skip
                yield labels[iface], ts, data[off : off + n].tobytes()

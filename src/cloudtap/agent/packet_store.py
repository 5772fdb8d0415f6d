"""PacketStore: the agent's rolling packet store on local disk, indexed by time, interface and flow.

Write path (capture threads): :meth:`PacketStore.append` receives each decoded batch (frames and their
``PACKET_DTYPE`` rows), keeps the frames of the selected interfaces cut at the snap length, and copies
them into the open block (one numba call per batch). A block holds ``block_kib`` of frame bytes; when
full (or older than ``seal_after_s``) it is sealed and queued for the writer thread. When more than
``max_pending_mib`` wait for the disk, new blocks are dropped and counted: the capture never waits.

On disk: ``seg-NNNNNNNN.ctpk`` segments of blocks, each with a ``seg-NNNNNNNN.idx`` of fixed-size index
records (``INDEX_DTYPE``: time range, interface set, a bloom filter of addresses, ports and flow hashes,
flags), and ``interfaces.json`` (store interface id -> name, VM domain, link types). The oldest segment
is deleted whenever the files exceed ``max_disk_mib``. A block is::

    header  "CTPB" u16 version u16 0 u32 n u32 data_len i64 min_ts i64 max_ts   (32 bytes)
    ts_ns i64[n] | wire_len u32[n] | cap_len u32[n] | iface u16[n] | linktype u16[n] | pad to 8 | frames

Read path: :meth:`PacketStore.query` picks the blocks whose index may hold matching packets (time
range, interfaces, and the hosts/ports a BPF filter requires), reads only those, selects rows by time
and interface, runs the filter (libpcap program, numba VM) and yields time-ordered FrameBatches;
:meth:`PacketQuery.pcapng_chunks` turns them into a pcapng stream.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import logging
import os
import queue
import struct
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cloudtap.agent import _packet_kernels as K
from cloudtap.agent.config import PacketsSection
from cloudtap.agent.packet_filter_hints import filter_hints
from cloudtap.capture.bpf import FrameFilter, vlan_aware
from cloudtap.capture.frames import FrameBatch
from cloudtap.capture.pcapng_writer import epb_sizes, interface_block, packet_blocks, section_header
from cloudtap.errors import CloudtapError

if TYPE_CHECKING:
    from cloudtap.agent.identity import ObservationPoints

log = logging.getLogger(__name__)

BLOCK_MAGIC = b"CTPB"
BLOCK_VERSION = 1
BLOCK_HEADER = struct.Struct("<4sHHIIqq")
INDEX_DTYPE = np.dtype(
    [
        ("segment", "<u4"),
        ("n", "<u4"),
        ("offset", "<u8"),
        ("length", "<u8"),
        ("data_len", "<u8"),
        ("min_ts", "<i8"),
        ("max_ts", "<i8"),
        ("flags", "<u4"),
        ("reserved", "<u4"),
        ("ifaces", "<u8", (K.IFACE_WORDS,)),
        ("bloom", "<u8", (K.BLOOM_WORDS,)),
    ]
)
_UNKNOWN = -1
_SKIP = -2
_MAX_SEGMENT = 256 << 20
#: Names a capture point id: ``point_id -> (interface name, VM domain or None)``.
PointNamer = Callable[[int], tuple[str, str | None]]
#: ``PacketFilter`` of the meter pipeline: ``(frames, packets) -> keep mask``.
PacketFilter = Callable[[FrameBatch, np.ndarray], np.ndarray]


class PacketQueryTooLarge(CloudtapError):
    """The packets of a query exceed the size the caller allows."""

    def __init__(self, limit: int, needed: int | None = None) -> None:
        self.limit = limit
        self.needed = needed
        more = f" ({needed} bytes match)" if needed is not None else ""
        super().__init__(f"the packets of this query exceed max_bytes={limit}{more}: narrow the window or the filter")


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


@dataclasses.dataclass
class StoredInterface:
    """An interface whose packets are stored, with the store's own stable id."""

    store_id: int
    name: str
    domain: str | None = None
    linktypes: list[int] = dataclasses.field(default_factory=list)

    @property
    def label(self) -> str:
        """``domain/interface`` when the VM is known, else the interface."""
        return f"{self.domain}/{self.name}" if self.domain else self.name


class _OpenBlock:
    """The block being filled (frames and columns preallocated)."""

    def __init__(self, data_bytes: int) -> None:
        cap = max(16, data_bytes // 16)
        self.data = np.empty(data_bytes, np.uint8)
        self.ts = np.empty(cap, np.int64)
        self.wire = np.empty(cap, np.uint32)
        self.cap = np.empty(cap, np.uint32)
        self.iface = np.empty(cap, np.uint16)
        self.linktype = np.empty(cap, np.uint16)
        self.bloom = np.zeros(K.BLOOM_WORDS, np.uint64)
        self.ifaces = np.zeros(K.IFACE_WORDS, np.uint64)
        self.flags = 0
        self.n = 0
        self.pos = 0
        self.opened = time.monotonic()

    @property
    def room(self) -> int:
        return self.ts.shape[0] - self.n

    def encode(self) -> tuple[bytes, np.ndarray]:
        """The block's bytes and its index record (segment/offset filled by the writer)."""
        n = self.n
        ts = self.ts[:n]
        head = BLOCK_HEADER.pack(BLOCK_MAGIC, BLOCK_VERSION, 0, n, self.pos, int(ts.min()), int(ts.max()))
        cols = [ts.tobytes(), self.wire[:n].tobytes(), self.cap[:n].tobytes(), self.iface[:n].tobytes(),
                self.linktype[:n].tobytes()]  # fmt: skip
        used = len(head) + sum(len(c) for c in cols)
        body = b"".join([head, *cols, b"\0" * ((-used) & 7), self.data[: self.pos].tobytes()])
        rec = np.zeros(1, INDEX_DTYPE)
        rec["n"] = n
        rec["length"] = len(body)
        rec["data_len"] = self.pos
        rec["min_ts"] = int(ts.min())
        rec["max_ts"] = int(ts.max())
        rec["flags"] = self.flags
        rec["ifaces"][0] = self.ifaces
        rec["bloom"][0] = self.bloom
        return body, rec


@dataclasses.dataclass
class _Segment:
    seq: int
    path: Path
    index_path: Path
    size: int = 0
    index_size: int = 0


def _segment_paths(directory: Path, seq: int) -> tuple[Path, Path]:
    return directory / f"seg-{seq:08d}.ctpk", directory / f"seg-{seq:08d}.idx"


def parse_block(buf: np.ndarray) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Split a block's bytes into ``(n, ts, wire_len, cap_len, iface, linktype, data_start)``.

    Raises:
        CloudtapError: the bytes are not a block of this format.
    """
    magic, version, _r, n, _data_len, _lo, _hi = BLOCK_HEADER.unpack_from(buf[: BLOCK_HEADER.size].tobytes())
    if magic != BLOCK_MAGIC or version != BLOCK_VERSION:
        raise CloudtapError(f"not a packet-store block (magic {magic!r}, version {version})")
    p = BLOCK_HEADER.size
    ts = buf[p : p + 8 * n].view(np.int64)
    p += 8 * n
    wire = buf[p : p + 4 * n].view(np.uint32)
    p += 4 * n
    cap = buf[p : p + 4 * n].view(np.uint32)
    p += 4 * n
    iface = buf[p : p + 2 * n].view(np.uint16)
    p += 2 * n
    lt = buf[p : p + 2 * n].view(np.uint16)
    p += 2 * n
    p += (-p) & 7
    return n, ts, wire, cap, iface, lt, p


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
        self._names = names or (lambda pid: (f"if{pid}", None))
        self._lock = threading.RLock()  # open block, index, interfaces, counters
        self._io_lock = threading.Lock()  # segment files: write, rotate, evict
        self._lut = np.full(1 << 16, _UNKNOWN, np.int32)
        self._lut_refreshed = time.monotonic()
        self._interfaces: list[StoredInterface] = []
        self._by_name: dict[str, StoredInterface] = {}
        self._index = np.zeros(0, INDEX_DTYPE)
        self._count = 0
        self._segments: list[_Segment] = []
        self._current: _Segment | None = None
        self._seg_fd: int | None = None
        self._idx_fd: int | None = None
        self._open: _OpenBlock | None = None
        self._queue: queue.Queue[tuple[bytes, np.ndarray, int] | None] = queue.Queue()
        self._pending_bytes = 0
        self._writer: threading.Thread | None = None
        self._next_seq = 0
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
        meta = self.directory / "interfaces.json"
        if meta.is_file():
            try:
                for item in json.loads(meta.read_text(encoding="utf-8"))["interfaces"]:
                    iface = StoredInterface(int(item["id"]), item["name"], item.get("domain"), list(item.get("linktypes", [])))
                    self._interfaces.append(iface)
                    self._by_name[iface.name] = iface
            except (OSError, ValueError, KeyError) as exc:
                self.stats.last_error = f"interfaces.json unreadable: {exc}"
        rows = []
        for idx_path in sorted(self.directory.glob("seg-*.idx")):
            seq = int(idx_path.stem.split("-")[1])
            seg_path, _ = _segment_paths(self.directory, seq)
            if not seg_path.is_file():
                idx_path.unlink(missing_ok=True)
                continue
            raw = idx_path.read_bytes()
            recs = np.frombuffer(raw[: len(raw) - len(raw) % INDEX_DTYPE.itemsize], INDEX_DTYPE)
            size = seg_path.stat().st_size
            recs = recs[(recs["offset"] + recs["length"]) <= size]
            rows.append(recs)
            self._segments.append(_Segment(seq, seg_path, idx_path, size, idx_path.stat().st_size))
            self._next_seq = seq + 1
        if rows:
            self._index = np.concatenate(rows).copy()
            self._count = self._index.shape[0]
        self._refresh_disk_stats()
        with self._io_lock:
            self._evict()

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
            self._lut[:] = _UNKNOWN
        if config.enabled:
            self._start()
        else:
            self.seal()
        if self._started:
            with self._io_lock:
                self._evict()
        return config

    # -- write path ----------------------------------------------------------------------------------
    def tap(self, previous: PacketFilter | None = None) -> PacketFilter:
        """A pipeline ``packet_filter`` that stores what ``previous`` keeps (or everything) and keeps it."""

        def store_filter(frames: FrameBatch, packets: np.ndarray) -> np.ndarray:
            keep = previous(frames, packets) if previous is not None else None
            self.append(frames, packets, keep)
            return keep if keep is not None else np.ones(len(frames), np.bool_)

        return store_filter

    def _resolve(self, point_ids: np.ndarray) -> None:
        globs = self.config.interfaces
        for pid in np.unique(point_ids).tolist():
            name, domain = self._names(int(pid))
            if not any(fnmatch.fnmatchcase(name, g) or (domain and fnmatch.fnmatchcase(domain, g)) for g in globs):
                self._lut[pid] = _SKIP
                continue
            iface = self._by_name.get(name)
            if iface is None:
                iface = StoredInterface(len(self._interfaces), name, domain)
                self._interfaces.append(iface)
                self._by_name[name] = iface
                self._save_interfaces()
            elif domain and iface.domain != domain:
                iface.domain = domain
                self._save_interfaces()
            self._lut[pid] = iface.store_id

    def _save_interfaces(self) -> None:
        items = [dataclasses.asdict(i) | {"id": i.store_id} for i in self._interfaces]
        tmp = self.directory / "interfaces.json.tmp"
        try:
            tmp.write_text(json.dumps({"interfaces": items}, indent=1), encoding="utf-8")
            os.replace(tmp, self.directory / "interfaces.json")
        except OSError as exc:
            self.stats.last_error = f"interfaces.json: {exc}"

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
            sids = self._lut[pids]
            if bool((sids == _UNKNOWN).any()):
                self._resolve(pids[sids == _UNKNOWN])
                sids = self._lut[pids]
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
                    blk = self._open = _OpenBlock(self.block_bytes)
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
        changed = False
        for key in pairs.tolist():
            iface = self._interfaces[key >> 16]
            if (key & 0xFFFF) not in iface.linktypes:
                iface.linktypes.append(key & 0xFFFF)
                changed = True
        if changed:
            self._save_interfaces()
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
            if now - self._lut_refreshed >= 10.0:
                self._lut[:] = _UNKNOWN
                self._lut_refreshed = now

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
            self._close_segment()

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
                    self._evict()
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

    def _close_segment(self) -> None:
        for fd in (self._seg_fd, self._idx_fd):
            if fd is not None:
                os.close(fd)
        self._seg_fd = self._idx_fd = None
        self._current = None

    def _rotate(self) -> None:
        self._close_segment()
        seq = self._next_seq
        self._next_seq += 1
        seg_path, idx_path = _segment_paths(self.directory, seq)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        self._seg_fd = os.open(seg_path, flags, 0o640)
        self._idx_fd = os.open(idx_path, flags, 0o640)
        seg = _Segment(seq, seg_path, idx_path)
        with self._lock:
            self._segments.append(seg)
        self._current = seg

    def _write_block(self, body: bytes, rec: np.ndarray) -> None:
        seg = self._current
        if seg is None or seg.size + len(body) > self.segment_bytes and seg.size > 0:
            self._rotate()
            seg = self._current
        assert seg is not None and self._seg_fd is not None and self._idx_fd is not None
        rec["segment"] = seg.seq
        rec["offset"] = seg.size
        _write_all(self._seg_fd, body)
        raw = rec.tobytes()
        _write_all(self._idx_fd, raw)
        with self._lock:
            seg.size += len(body)
            seg.index_size += len(raw)
            if self._count == self._index.shape[0]:
                grown = np.zeros(max(64, 2 * self._count), INDEX_DTYPE)
                grown[: self._count] = self._index[: self._count]
                self._index = grown
            self._index[self._count] = rec[0]
            self._count += 1
            s = self.stats
            s.packets_written += int(rec["n"][0])
            s.bytes_written += int(rec["data_len"][0])
            s.blocks_written += 1
            self._refresh_disk_stats()

    def _evict(self) -> None:
        """Delete the oldest segments while the files exceed the budget (holding ``_io_lock``)."""
        while True:
            with self._lock:
                disk = sum(s.size + s.index_size for s in self._segments)
                if disk <= self.budget_bytes or not self._segments:
                    return
                oldest = self._segments[0]
            if oldest is self._current:
                self._close_segment()
            with self._lock:
                self._segments.pop(0)
                rows = self._index[: self._count]
                gone = int(np.count_nonzero(rows["segment"] == oldest.seq))
                dead = rows[rows["segment"] == oldest.seq]
                keep = rows[rows["segment"] != oldest.seq]
                self._index = keep.copy()
                self._count = keep.shape[0]
                s = self.stats
                s.evicted_segments += 1
                s.evicted_packets += int(dead["n"].sum())
                s.evicted_bytes += int(dead["data_len"].sum())
                del gone
                self._refresh_disk_stats()
            oldest.path.unlink(missing_ok=True)
            oldest.index_path.unlink(missing_ok=True)

    def _refresh_disk_stats(self) -> None:
        rows = self._index[: self._count]
        s = self.stats
        s.segments = len(self._segments)
        s.disk_bytes = sum(seg.size + seg.index_size for seg in self._segments)
        s.stored_packets = int(rows["n"].sum())
        s.oldest_ns = int(rows["min_ts"].min()) if rows.shape[0] else 0
        s.newest_ns = int(rows["max_ts"].max()) if rows.shape[0] else 0

    # -- read path --------------------------------------------------------------------------------------
    def interfaces(self) -> list[StoredInterface]:
        """Every interface the store has kept packets of."""
        with self._lock:
            return [dataclasses.replace(i, linktypes=list(i.linktypes)) for i in self._interfaces]

    def index(self) -> np.ndarray:
        """A copy of the block index (``INDEX_DTYPE``), oldest block first."""
        with self._lock:
            return self._index[: self._count].copy()

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
            rows = self._index[: self._count].copy()
            ifaces = [dataclasses.replace(i, linktypes=list(i.linktypes)) for i in self._interfaces]
            self.stats.queries += 1
        wanted = [i for i in ifaces if _wanted(i, interfaces)]
        return PacketQuery(self, rows, wanted, int(from_ns), int(to_ns), bpf, frame_filter)

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


def _wanted(iface: StoredInterface, patterns: Sequence[str] | None) -> bool:
    if not patterns:
        return True
    for p in patterns:
        if fnmatch.fnmatchcase(iface.name, p) or (iface.domain and fnmatch.fnmatchcase(iface.domain, p)):
            return True
        if fnmatch.fnmatchcase(iface.label, p):
            return True
    return False


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


class PacketQuery:
    """A planned query: candidate blocks known from the index, read lazily in time order.

    Attributes:
        interfaces: the stored interfaces the query covers.
        blocks: index records of the candidate blocks, by ascending ``min_ts``.
        skipped_blocks: blocks the index let the query skip.
    """

    def __init__(
        self,
        store: PacketStore,
        rows: np.ndarray,
        interfaces: list[StoredInterface],
        from_ns: int,
        to_ns: int,
        bpf: str | None,
        frame_filter: FrameFilter | None,
    ) -> None:
        self.store = store
        self.interfaces = interfaces
        self.from_ns, self.to_ns, self.bpf = from_ns, to_ns, bpf
        self._filter = frame_filter
        self._iface_ok = np.zeros(1 << 16, np.bool_)
        want_bits = np.zeros(K.IFACE_WORDS, np.uint64)
        for i in interfaces:
            self._iface_ok[i.store_id] = True
            want_bits[(i.store_id >> 6) % K.IFACE_WORDS] |= np.uint64(1) << np.uint64(i.store_id & 63)
        hints = filter_hints(bpf)
        addr_keys = np.array([K.addr_key(np.uint64(h), np.uint64(lo)) for h, lo in hints.addresses], np.uint64)
        port_keys = np.array([K.port_key(np.uint64(p)) for p in hints.ports], np.uint64)
        out = np.empty(rows.shape[0], np.int64)
        k = K.candidate_blocks(
            rows["min_ts"], rows["max_ts"], rows["ifaces"], rows["bloom"], rows["flags"].astype(np.int64),
            self.from_ns, self.to_ns, want_bits, addr_keys, port_keys, out,
        )  # fmt: skip
        chosen = rows[out[:k]]
        self.blocks = chosen[np.argsort(chosen["min_ts"], kind="stable")]
        self.skipped_blocks = rows.shape[0] - k
        self.blocks_read = 0
        self.evicted_blocks = 0
        with store._lock:
            store.stats.blocks_skipped += self.skipped_blocks

    @property
    def upper_bound_bytes(self) -> int:
        """Most pcapng packet-block bytes the query can produce (from the index alone)."""
        b = self.blocks
        return int(b["data_len"].sum() + b["n"].astype(np.int64).sum() * 35)

    def count(self) -> tuple[int, int]:
        """Read the candidate blocks and return ``(packets, pcapng packet-block bytes)`` of the matches."""
        packets = size = 0
        for fb in self.batches():
            packets += len(fb)
            size += int(epb_sizes(fb.cap_len).sum())
        return packets, size

    def check_size(self, max_bytes: int | None) -> None:
        """Raise PacketQueryTooLarge when the matching packets exceed ``max_bytes`` pcapng bytes."""
        if max_bytes is None or self.upper_bound_bytes <= max_bytes:
            return
        _, size = self.count()
        if size > max_bytes:
            raise PacketQueryTooLarge(max_bytes, size)

    # -- reading ----------------------------------------------------------------------------------------
    def _load(self, rec: np.void, fds: dict[int, int]) -> FrameBatch | None:
        seq = int(rec["segment"])
        fd = fds.get(seq)
        if fd is None:
            seg_path, _ = _segment_paths(self.store.directory, seq)
            try:
                fd = fds[seq] = os.open(seg_path, os.O_RDONLY)
            except FileNotFoundError:
                self.evicted_blocks += 1
                return None
        raw = os.pread(fd, int(rec["length"]), int(rec["offset"]))
        if len(raw) < int(rec["length"]):
            self.evicted_blocks += 1
            return None
        buf = np.frombuffer(raw, np.uint8)
        n, ts, wire, cap, iface, lt, start = parse_block(buf)
        self.blocks_read += 1
        off = np.empty(n, np.int64)
        off[0] = start
        np.cumsum(cap[:-1], out=off[1:])
        off[1:] += start
        sel = np.empty(n, np.int64)
        k = K.select_rows(ts, iface, self.from_ns, self.to_ns, self._iface_ok, sel)
        sel = sel[:k]
        fb = FrameBatch(buf, off[sel], cap[sel], wire[sel], ts[sel], lt[sel], iface[sel])
        if self._filter is not None and len(fb):
            keep = self._filter.mask(fb)
            if not bool(keep.all()):
                fb = _take(fb, np.flatnonzero(keep))
        return fb

    def batches(self) -> Iterator[FrameBatch]:
        """Matching frames in time order, one batch per candidate block (``interface`` = store id)."""
        fds: dict[int, int] = {}
        pending: FrameBatch | None = None
        try:
            for rec in self.blocks:
                if pending is not None and len(pending):
                    out, pending = _split_before(pending, int(rec["min_ts"]))
                    if out is not None:
                        yield out
                fb = self._load(rec, fds)
                if fb is None or len(fb) == 0:
                    continue
                pending = fb if pending is None or len(pending) == 0 else _concat(pending, fb)
            if pending is not None and len(pending):
                order = np.argsort(pending.ts_ns, kind="stable")
                yield _take(pending, order)
        finally:
            for fd in fds.values():
                os.close(fd)
            with self.store._lock:
                self.store.stats.blocks_read += self.blocks_read

    def pcapng_chunks(self, host: str = "") -> Iterator[bytes]:
        """The matching packets as a pcapng stream: SHB, one IDB per (interface, link type), EPBs.

        Each IDB is named ``<vm>/<interface>`` (or the interface) and described as
        ``host=<host> vm=<vm or -> interface=<interface>``.
        """
        yield section_header(f"cloudtap agent {host}".strip())
        keys: list[int] = []
        seen = np.bitwise_or.reduce(self.blocks["ifaces"], axis=0) if len(self.blocks) else np.zeros(K.IFACE_WORDS, np.uint64)
        for i in self.interfaces:
            if not int(seen[(i.store_id >> 6) % K.IFACE_WORDS]) >> (i.store_id & 63) & 1:
                continue
            for lt in sorted(i.linktypes) or [1]:
                keys.append(i.store_id << 16 | lt)
                desc = f"host={host or '-'} vm={i.domain or '-'} interface={i.name}"
                yield interface_block(lt, i.label, desc, self.store.snaplen)
        if not keys:
            return
        sorted_keys = np.array(keys, np.int64)
        order = np.argsort(sorted_keys)
        sorted_keys = sorted_keys[order]
        for fb in self.batches():
            key = (fb.interface.astype(np.int64) << 16) | fb.linktype
            pos = np.searchsorted(sorted_keys, key)
            yield packet_blocks(fb, order[np.minimum(pos, len(order) - 1)]).tobytes()


def _take(fb: FrameBatch, idx: np.ndarray) -> FrameBatch:
    return FrameBatch(fb.data, fb.offset[idx], fb.cap_len[idx], fb.wire_len[idx], fb.ts_ns[idx], fb.linktype[idx],
                      fb.interface[idx])  # fmt: skip


def _compact(fb: FrameBatch) -> FrameBatch:
    """Copy ``fb``'s frames into a buffer of their own (drops the bytes of frames no longer needed)."""
    out = np.empty(int(fb.cap_len.sum(dtype=np.int64)), np.uint8)
    caps = np.empty(len(fb), np.uint32)
    K.gather(fb.data, fb.offset, fb.cap_len, np.arange(len(fb), dtype=np.int64), 1 << 30, out, 0, caps)
    off = np.zeros(len(fb), np.int64)
    if len(fb) > 1:
        np.cumsum(caps[:-1], out=off[1:])
    return FrameBatch(out, off, fb.cap_len, fb.wire_len, fb.ts_ns, fb.linktype, fb.interface)


def _concat(a: FrameBatch, b: FrameBatch) -> FrameBatch:
    a = _compact(a) if a.data.shape[0] > 2 * a.cap_len.sum(dtype=np.int64) + 4096 else a
    data = np.concatenate([a.data, b.data])
    shift = a.data.shape[0]
    return FrameBatch(
        data,
        np.concatenate([a.offset, b.offset + shift]),
        np.concatenate([a.cap_len, b.cap_len]),
        np.concatenate([a.wire_len, b.wire_len]),
        np.concatenate([a.ts_ns, b.ts_ns]),
        np.concatenate([a.linktype, b.linktype]),
        np.concatenate([a.interface, b.interface]),
    )


def _split_before(fb: FrameBatch, cut: int) -> tuple[FrameBatch | None, FrameBatch]:
    """``(frames with ts < cut in time order, the rest)``; nothing later can precede the first part."""
    early = fb.ts_ns < cut
    n = int(np.count_nonzero(early))
    if n == 0:
        return None, fb
    idx = np.flatnonzero(early)
    out = _take(fb, idx[np.argsort(fb.ts_ns[idx], kind="stable")])
    if n == len(fb):
        return out, _take(fb, np.zeros(0, np.int64))
    return out, _take(fb, np.flatnonzero(~early))


def point_namer(points: ObservationPoints, fallback: str | None = None) -> PointNamer:
    """Name capture point ids from the agent's observation points.

    Args:
        points: the agent's points (interface and VM domain per id).
        fallback: name of ids no point describes (replay mode: the file name); ``if<id>`` if None.
    """

    def names(pid: int) -> tuple[str, str | None]:
        known = points.all()
        if pid < len(known):
            return known[pid].interface, known[pid].domain
        if fallback:
            return (fallback if pid == 0 else f"{fallback}#{pid}"), None
        return f"if{pid}", None

    return names

"""Packet-store queries: the candidate blocks of a window and filter, read lazily in time order.

The index (time range, interface set, bloom filter of the hosts and ports a BPF filter requires)
picks the blocks to read; each block's rows are selected by time and interface, the filter (libpcap
program, numba VM) decides every packet, and the batches come out time-ordered, also as pcapng.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from cloudtap.agent import _packet_kernels as K
from cloudtap.agent.packet_blocks import parse_block
from cloudtap.agent.packet_filter_hints import filter_hints
from cloudtap.agent.packet_interfaces import StoredInterface
from cloudtap.agent.packet_segments import segment_paths
from cloudtap.capture.bpf import FrameFilter
from cloudtap.capture.frames import FrameBatch
from cloudtap.capture.pcapng_writer import epb_sizes, interface_block, packet_blocks, section_header
from cloudtap.errors import CloudtapError

if TYPE_CHECKING:
    from cloudtap.agent.packet_store import PacketStore


class PacketQueryTooLarge(CloudtapError):
    """The packets of a query exceed the size the caller allows."""

    def __init__(self, limit: int, needed: int | None = None) -> None:
        self.limit = limit
        self.needed = needed
        more = f" ({needed} bytes match)" if needed is not None else ""
        super().__init__(f"the packets of this query exceed max_bytes={limit}{more}: narrow the window or the filter")


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
        store.count_blocks(skipped=self.skipped_blocks)

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
            seg_path, _ = segment_paths(self.store.directory, seq)
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
            self.store.count_blocks(read=self.blocks_read)

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

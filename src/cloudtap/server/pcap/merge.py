"""Merge the agents' pcapng answers by time into one pcapng: one IDB per capture point.

Each answer is read with :class:`~cloudtap.capture.pcap_file.CaptureFile` (memory map, numba record
walk); the merge is one stable ``argsort`` of all timestamps, and packet blocks are written by the
numba pcapng kernel chunk by chunk, so the output streams with bounded memory beyond the
per-packet columns.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from cloudtap.capture.frames import FrameBatch
from cloudtap.capture.pcap_file import CaptureFile
from cloudtap.capture.pcapng_writer import epb_sizes, interface_block, section_header, write_packet_blocks_at
from cloudtap.server.pcap.agent_stream import read_interfaces
from cloudtap.server.pcap.fetch import Fetched

CHUNK_PACKETS = 65536


@dataclass
class _Part:
    fetched: Fetched
    capture: CaptureFile
    frames: FrameBatch
    if_index: np.ndarray  #: output IDB index of each frame


def _all_frames(capture: CaptureFile) -> FrameBatch:
    batches = list(capture.batches(1 << 20))
    if not batches:
        return FrameBatch.empty()
    if len(batches) == 1:
        return batches[0]
    first = batches[0]
    return FrameBatch(
        first.data,
        *(np.concatenate([getattr(b, f) for b in batches]) for f in ("offset", "cap_len", "wire_len", "ts_ns", "linktype", "interface")),
    )


class MergedCapture:
    """The merged pcapng of several agents' answers (owns and deletes their spool files).

    Attributes:
        size: bytes of the whole pcapng.
        packets: packets in it.
        interfaces: output interface names, ``<host>/<vm>/<interface>``, in IDB order.
    """

    def __init__(self, fetched: list[Fetched]) -> None:
        self._parts: list[_Part] = []
        self._paths = [f.path for f in fetched]
        self.interfaces: list[str] = []
        header = [section_header("cloudtap server")]
        try:
            for f in fetched:
                capture = CaptureFile(f.path)
                frames = _all_frames(capture)
                idbs = read_interfaces(f.path, default_host=f.agent_id)
                used = np.zeros(max(len(idbs), 1), np.bool_)
                if len(frames):
                    used[np.unique(frames.interface)] = True
                new_index = np.full(max(len(idbs), 1), -1, np.int64)
                for i, idb in enumerate(idbs):
                    if used[i]:
                        new_index[i] = len(self.interfaces)
                        label = idb.label(f.target.host)
                        self.interfaces.append(label)
                        header.append(interface_block(idb.linktype, label, f"agent={f.agent_id} url={f.target.url}"))
                self._parts.append(_Part(f, capture, frames, new_index[frames.interface]))
        except BaseException:
            self.close()
            raise
        self._header = b"".join(header)
        ts = [p.frames.ts_ns for p in self._parts]
        self._ts = np.concatenate(ts) if ts else np.zeros(0, np.int64)
        self._part = np.concatenate([np.full(len(p.frames), k, np.int32) for k, p in enumerate(self._parts)]) if ts else np.zeros(0, np.int32)
        self._row = np.concatenate([np.arange(len(p.frames), dtype=np.int64) for p in self._parts]) if ts else np.zeros(0, np.int64)
        self._order = np.argsort(self._ts, kind="stable")
        caps = np.concatenate([p.frames.cap_len for p in self._parts]) if ts else np.zeros(0, np.uint32)
        self._sizes = epb_sizes(caps)
        self.packets = int(self._ts.shape[0])
        self.size = len(self._header) + int(self._sizes.sum())

    def iter_bytes(self, chunk_packets: int = CHUNK_PACKETS) -> Iterator[bytes]:
        """The pcapng, in chunks of about ``chunk_packets`` packets."""
        yield self._header
        order = self._order
        for start in range(0, order.shape[0], chunk_packets):
            idx = order[start : start + chunk_packets]
            sizes = self._sizes[idx]
            pos = np.zeros(idx.shape[0], np.int64)
            if idx.shape[0] > 1:
                np.cumsum(sizes[:-1], out=pos[1:])
            out = np.empty(int(sizes.sum()), np.uint8)
            parts = self._part[idx]
            rows = self._row[idx]
            for k, part in enumerate(self._parts):
                mine = parts == k
                if not bool(mine.any()):
                    continue
                write_packet_blocks_at(part.frames, part.if_index, rows[mine], pos[mine], out)
            yield out.tobytes()

    def close(self) -> None:
        """Unmap and delete the agents' answers."""
        for part in self._parts:
            part.capture.close()
        self._parts = []
        # spool files are deleted even when parsing failed half way
        for part_path in self._paths:
            part_path.unlink(missing_ok=True)

    def __enter__(self) -> MergedCapture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

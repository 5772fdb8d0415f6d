"""Read pcap and pcapng capture files as FrameBatches, straight from a memory map.

The format is detected by magic number, never by file name. Classic pcap is read as Wireshark reads
it: micro- and nanosecond magics, the modified (Kuznetzov, 0xa1b2cd34) format with its 24-byte
record headers, and every major version 2 (and the swapped 543): versions before 2.3 write the wire
length before the captured length, 2.3 files exist both ways (swapped when the "captured" length
exceeds the wire length), and AIX tcpdump's 2.2 files carry ifType link types and nanoseconds. Records are walked by numba kernels
(``_pcap_kernels``); Python only parses file headers and the rare pcapng Section Header and Interface
Description blocks. Frames are never copied: every batch's ``data`` is a read-only view of the whole
mapped file and ``offset`` holds absolute file offsets. The kernels pre-read the map sequentially a
little ahead of the record walk, so a batch's bytes are faulted in and cached at memory bandwidth
rather than one DRAM latency per record (and are still in cache when the batch is decoded).

Damage is reported as :class:`CorruptCaptureError` with the byte offset of the bad record or block,
after every good frame before it has been yielded.
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import numpy as np

from cloudtap.capture import _pcap_kernels as K
from cloudtap.capture.frames import FrameBatch
from cloudtap.errors import CaptureError, CorruptCaptureError

MAX_CAPLEN = 262_144
"""Largest captured length accepted when the file's snaplen is no larger (libpcap/Wireshark limit)."""

HARD_MAX_CAPLEN = 1 << 27
"""Upper bound on a per-file caplen limit, however large the declared snaplen (libpcap's D-Bus max)."""

# pcap magic (as read in the file's byte order) -> (ns per sub-second unit, record header bytes)
_PCAP_MAGICS: dict[int, tuple[int, int]] = {
    0xA1B2C3D4: (1000, 16),
    0xA1B23C4D: (1, 16),
    0xA1B2CD34: (1000, 24),
}
#: pcap 2.2 files with these link types are AIX tcpdump's: RFC 1573 ifType values instead of
#: LINKTYPE_* (Ethernet, Token Ring, FDDI) and nanoseconds in the microsecond field (as Wireshark).
_AIX_IFTYPES = {6: 1, 9: 6, 15: 10}
_PCAPNG_BOM = 0x1A2B3C4D
_MIN_SHB_LEN = 28
_MIN_IDB_LEN = 20
_OPT_IF_TSRESOL = 9
_OPT_IF_TSOFFSET = 14
_DEFAULT_TSRESOL = 6

_REASONS = {
    K.ERR_TRUNC_HEADER: "file ends inside a record header (truncated capture)",
    K.ERR_TRUNC_DATA: "file ends inside a record's packet data (truncated capture)",
    K.ERR_CAPLEN: "captured length is larger than any sane snapshot length",
    K.ERR_BLOCK_LEN: "block total length is too small or not a multiple of 4",
    K.ERR_BLOCK_EOF: "block runs past the end of the file (truncated capture)",
    K.ERR_TRAILER: "trailing block total length does not match the leading one",
    K.ERR_IFACE: "packet block refers to an interface no Interface Description Block defined",
    K.ERR_CAPLEN_BLOCK: "packet data is longer than its block",
}


def _preread_state(pos: int) -> np.ndarray:
    """Fresh pre-read state for a walk starting at ``pos`` (see ``_pcap_kernels``)."""
    return np.array([pos, 0], np.int64)


def _caplen_limit(snaplen: int) -> int:
    """Max caplen accepted for a file or interface declaring ``snaplen`` (0 = unset)."""
    return max(MAX_CAPLEN, min(snaplen, HARD_MAX_CAPLEN))


@dataclass
class _Section:
    """Interfaces of the current pcapng section, as lists grown by IDBs and arrays for the kernel."""

    be: bool
    base: int
    linktype: list[int] = field(default_factory=list)
    snaplen: list[int] = field(default_factory=list)
    tsresol: list[int] = field(default_factory=list)
    tsoff_ns: list[int] = field(default_factory=list)
    _arrays: tuple[np.ndarray, ...] | None = None

    def add(self, linktype: int, snaplen: int, tsresol: int, tsoff_ns: int) -> None:
        self.linktype.append(linktype)
        self.snaplen.append(snaplen)
        self.tsresol.append(tsresol)
        self.tsoff_ns.append(tsoff_ns)
        self._arrays = None

    def arrays(self) -> tuple[np.ndarray, ...]:
        if self._arrays is None:
            self._arrays = (
                np.array(self.linktype, np.uint16),
                np.array(self.snaplen, np.int64),
                np.array([_caplen_limit(s) for s in self.snaplen], np.int64),
                np.array(self.tsresol, np.int64),
                np.array(self.tsoff_ns, np.int64),
            )
        return self._arrays


class CaptureFile:
    """A pcap or pcapng file opened for batch reading.

    Attributes:
        path: the file.
        format: ``"pcap"`` or ``"pcapng"``.
        size: file size in bytes.
        bytes_read: file offset reached by the current/last ``batches()`` run (for progress bars).
        frames_read: frames yielded by the current/last ``batches()`` run.
        linktypes: interface index -> LINKTYPE, for the interfaces seen so far (pcap: ``{0: lt}``).
            pcapng interface indices are global: sections after the first continue the numbering.
    """

    def __init__(self, path: str | Path) -> None:
        """Open and map ``path``, detect its format and check its file header.

        Args:
            path: capture file.

        Raises:
            CaptureError: the file cannot be read or is not a supported pcap/pcapng capture.
        """
        self.path = Path(path)
        self.bytes_read = 0
        self.frames_read = 0
        self.linktypes: dict[int, int] = {}
        self._mm: mmap.mmap | None = None
        try:
            with open(self.path, "rb") as fh:
                self.size = os.fstat(fh.fileno()).st_size
                if self.size == 0:
                    raise CaptureError(f"{self.path}: empty file, not a pcap or pcapng capture")
                self._mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as exc:
            raise CaptureError(f"{self.path}: cannot open capture file: {exc.strerror or exc}") from exc
        self._data = np.frombuffer(self._mm, dtype=np.uint8)
        try:
            self._detect_format()
        except CaptureError:
            self.close()
            raise

    # -- file headers ---------------------------------------------------------------------------

    def _detect_format(self) -> None:
        head = bytes(self._data[:4])
        if head == b"\x0a\x0d\x0d\x0a":
            self.format = "pcapng"
            sec = self._parse_shb(0, base=0)
            pos = self._u32(4, sec.be)
            try:  # fill ``linktypes`` from the IDBs that open the file; batches() re-reads them
                while pos + 12 <= self.size and self._u32(pos, sec.be) == K.IDB_TYPE:
                    self._parse_idb(pos, sec)
                    pos += self._u32(pos + 4, sec.be)
            except CorruptCaptureError:
                pass  # batches() raises it, after any good frames, with its offset
            return
        if len(head) < 4:
            raise CaptureError(f"{self.path}: not a pcap or pcapng capture ({self.size}-byte file)")
        le, be = struct.unpack("<I", head)[0], struct.unpack(">I", head)[0]
        if le in _PCAP_MAGICS:
            self._pcap_be, magic = False, le
        elif be in _PCAP_MAGICS:
            self._pcap_be, magic = True, be
        else:
            raise CaptureError(f"{self.path}: not a pcap or pcapng capture (magic bytes {head.hex()})")
        self.format = "pcap"
        self._ts_mult, self._rec_hdr_len = _PCAP_MAGICS[magic]
        self._parse_pcap_header()

    def _parse_pcap_header(self) -> None:
        if self.size < 24:
            raise CorruptCaptureError(str(self.path), 0, "file ends inside the 24-byte pcap file header")
        e = ">" if self._pcap_be else "<"
        major, minor, _zone, _sigfigs, snaplen, ltfield = struct.unpack(e + "HHiIII", bytes(self._data[4:24]))
        if major < 2:
            raise CaptureError(
                f"{self.path}: unsupported pcap version {major}.{minor} (2.0 and later are read)"
            )
        if ltfield & 0x03FF0000:
            raise CaptureError(
                f"{self.path}: reserved bits of the pcap link-type field are not zero (0x{ltfield:08x})"
            )
        linktype = ltfield & 0xFFFF
        # Versions before 2.3 (and the byte-swapped 543) wrote the wire length first; 2.3 files exist
        # both ways, so their records are swapped only when the captured length exceeds the wire's.
        self._lengths = K.LENGTHS_NORMAL
        if major == 543 or (major == 2 and minor < 3):
            self._lengths = K.LENGTHS_SWAPPED
        elif major == 2 and minor == 3:
            self._lengths = K.LENGTHS_MAYBE_SWAPPED
        if (major, minor) == (2, 2) and linktype in _AIX_IFTYPES and self._rec_hdr_len == 16:
            linktype = _AIX_IFTYPES[linktype]
            self._ts_mult = 1
        self.linktypes = {0: linktype}
        self._snaplen = snaplen

    def _u32(self, pos: int, be: bool) -> int:
        return int.from_bytes(self._data[pos : pos + 4].tobytes(), "big" if be else "little")

    def _check_block(self, pos: int, be: bool, min_len: int, what: str) -> int:
        """Validate the framing of the block at ``pos`` and return its total length."""
        if pos + 12 > self.size:
            raise CorruptCaptureError(str(self.path), pos, f"file ends inside a {what} header")
        blen = self._u32(pos + 4, be)
        if blen < min_len or blen & 3:
            raise CorruptCaptureError(str(self.path), pos, f"{what} total length {blen} is invalid")
        if pos + blen > self.size:
            raise CorruptCaptureError(str(self.path), pos, f"{what} runs past the end of the file")
        if self._u32(pos + blen - 4, be) != blen:
            raise CorruptCaptureError(
                str(self.path), pos, f"{what} trailing total length does not match the leading one"
            )
        return blen

    def _parse_shb(self, pos: int, base: int) -> _Section:
        """Parse the Section Header Block at ``pos``; return the new section (no interfaces yet)."""
        if pos + 12 > self.size:
            raise CorruptCaptureError(str(self.path), pos, "file ends inside a Section Header Block")
        bom = self._u32(pos + 8, False)
        if bom == _PCAPNG_BOM:
            be = False
        elif bom == int.from_bytes(_PCAPNG_BOM.to_bytes(4, "little"), "big"):
            be = True
        else:
            raise CorruptCaptureError(
                str(self.path), pos, f"Section Header Block has a bad byte-order magic 0x{bom:08x}"
            )
        self._check_block(pos, be, _MIN_SHB_LEN, "Section Header Block")
        e = ">" if be else "<"
        major, minor = struct.unpack(e + "HH", self._data[pos + 12 : pos + 16].tobytes())
        if major != 1 or minor not in (0, 2):
            raise CaptureError(
                f"{self.path}: unsupported pcapng version {major}.{minor} in the section at byte offset "
                f"{pos} (only 1.0 and 1.2 are supported)"
            )
        return _Section(be=be, base=base)

    def _parse_idb(self, pos: int, sec: _Section) -> None:
        """Parse the Interface Description Block at ``pos`` into ``sec`` and ``linktypes``."""
        be = sec.be
        blen = self._check_block(pos, be, _MIN_IDB_LEN, "Interface Description Block")
        e = ">" if be else "<"
        linktype, _reserved, snaplen = struct.unpack(e + "HHI", self._data[pos + 8 : pos + 16].tobytes())
        tsresol, tsoff = _DEFAULT_TSRESOL, 0
        p, stop = pos + 16, pos + blen - 4
        while p + 4 <= stop:
            code, olen = struct.unpack(e + "HH", self._data[p : p + 4].tobytes())
            if code == 0:
                break
            if p + 4 + olen > stop:
                raise CorruptCaptureError(
                    str(self.path), pos, f"Interface Description Block option {code} runs past the block end"
                )
            value = self._data[p + 4 : p + 4 + olen].tobytes()
            if code == _OPT_IF_TSRESOL and olen == 1:
                tsresol = value[0]
            elif code == _OPT_IF_TSOFFSET and olen == 8:
                tsoff = struct.unpack(e + "q", value)[0]
            p += 4 + ((olen + 3) & ~3)
        index = sec.base + len(sec.linktype)
        if index > 0xFFFF:
            raise CorruptCaptureError(str(self.path), pos, "more than 65536 interfaces")
        sec.add(linktype, snaplen, tsresol, tsoff * 1_000_000_000)
        self.linktypes[index] = linktype

    # -- reading --------------------------------------------------------------------------------

    def batches(self, max_frames: int = 65536) -> Iterator[FrameBatch]:
        """Yield the file's frames in file order, in batches of at most ``max_frames``.

        Args:
            max_frames: batch capacity (>= 1).

        Returns:
            An iterator of FrameBatch; ``data`` is a read-only view of the mapped file.

        Raises:
            CorruptCaptureError: the file is damaged; raised after every frame before the damage was yielded.
            CaptureError: the file was closed, or a later pcapng section has an unsupported version.
        """
        if max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {max_frames}")
        if self._mm is None:
            raise CaptureError(f"{self.path}: capture file is closed")
        self.bytes_read = 0
        self.frames_read = 0
        if self.format == "pcap":
            return self._pcap_batches(max_frames)
        return self._pcapng_batches(max_frames)

    def _alloc(self, pos: int, max_frames: int) -> tuple[np.ndarray, ...]:
        cap = min(max_frames, (self.size - pos) // 16 + 1)
        return (
            np.empty(cap, np.int64),
            np.empty(cap, np.uint32),
            np.empty(cap, np.uint32),
            np.empty(cap, np.int64),
            np.empty(cap, np.uint16),
            np.empty(cap, np.uint16),
        )

    def _batch(self, arrays: tuple[np.ndarray, ...], n: int, pos: int) -> FrameBatch:
        self.bytes_read = pos
        self.frames_read += n
        off, cl, wl, ts, lt, itf = (a[:n] for a in arrays)
        return FrameBatch(self._data, off, cl, wl, ts, lt, itf)

    def _pcap_batches(self, max_frames: int) -> Iterator[FrameBatch]:
        data, end, pos = self._data, self.size, 24
        be, hdr_len, ts_mult, lengths = self._pcap_be, self._rec_hdr_len, self._ts_mult, self._lengths
        limit = _caplen_limit(self._snaplen)
        linktype = self.linktypes[0]
        stream = _preread_state(pos)
        while pos < end:
            arrays = self._alloc(pos, max_frames)
            off, cl, wl, ts, lt, itf = arrays
            n, pos, status = K.scan_pcap(
                data, pos, end, be, hdr_len, ts_mult, limit, stream, off, cl, wl, ts, lengths
            )
            lt[:n] = linktype
            itf[:n] = 0
            if n:
                yield self._batch(arrays, n, pos)
            if status < 0:
                self.bytes_read = pos
                raise CorruptCaptureError(str(self.path), pos, _REASONS[status])
        self.bytes_read = pos

    def _pcapng_batches(self, max_frames: int) -> Iterator[FrameBatch]:
        data, end = self._data, self.size
        self.linktypes = {}
        sec = self._parse_shb(0, base=0)
        pos = self._u32(4, sec.be)  # framing already checked by _parse_shb
        stream = _preread_state(pos)
        while pos < end:
            arrays = self._alloc(pos, max_frames)
            off, cl, wl, ts, lt, itf = arrays
            n, status = 0, K.ST_FULL
            error: CaptureError | None = None
            while n < off.shape[0]:
                ifs = sec.arrays()
                n, pos, status = K.scan_pcapng(data, pos, end, sec.be, sec.base, *ifs, stream, n, *arrays)
                if status != K.ST_BLOCK:
                    break
                try:
                    if self._u32(pos, sec.be) == K.IDB_TYPE:
                        self._parse_idb(pos, sec)
                    else:
                        sec = self._parse_shb(pos, base=sec.base + len(sec.linktype))
                    pos += self._u32(pos + 4, sec.be)
                except CaptureError as exc:
                    error = exc
                    break
            if n:
                yield self._batch(arrays, n, pos)
            self.bytes_read = pos
            if error is not None:
                raise error
            if status < 0:
                raise CorruptCaptureError(str(self.path), pos, _REASONS[status])
        self.bytes_read = pos

    # -- lifetime -------------------------------------------------------------------------------

    def close(self) -> None:
        """Release the mapping (deferred until batches still referencing it are gone)."""
        mm, self._mm = self._mm, None
        self._data = np.zeros(0, np.uint8)
        if mm is not None:
            try:
                mm.close()
            except BufferError:
                pass  # yielded batches still view the map; it is unmapped when they are freed

    def __enter__(self) -> CaptureFile:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"CaptureFile({str(self.path)!r}, format={self.format!r}, size={self.size})"


def open_capture(path: str | Path) -> CaptureFile:
    """Open a pcap or pcapng file (format detected by magic number).

    Args:
        path: capture file.

    Returns:
        The opened CaptureFile.
    """
    return CaptureFile(path)

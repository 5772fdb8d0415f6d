"""The batch frame: its layout, its header, and every check made before a byte of it is decompressed.

One batch is a frame::

    offset  size  field
    0       4     magic b"CTAP"
    4       2     wire version (uint16 LE, 1)
    6       2     flags (uint16 LE, 0: reserved)
    8       4     header length H (uint32 LE)
    12      4     CRC-32 of the header bytes (uint32 LE)
    16      H     header: UTF-8 JSON object (below)
    16+H    ...   one Arrow IPC stream per kind, zstd-compressed buffers, in header order

The header is ``{"agent_id", "seq", "created_ns", "schema_version", "codec": "zstd", "kinds": [{"kind",
"rows", "bytes", "crc32"}, ...]}``. Every byte of the frame is covered by a length and a CRC-32, so a
truncated or bit-flipped frame is always rejected with :class:`WireError`; it is never decoded into
different rows. A hostile frame cannot make the reader allocate much either: kinds and versions are
checked before anything is decompressed, and each section's decoded size is read from its Arrow
metadata (the uncompressed length ahead of every buffer) and capped before a byte is inflated.

Encoding the tables into sections and decoding them back is :mod:`cloudtap.ship.wire`.
"""

from __future__ import annotations

import json
import re
import struct
import zlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import pyarrow as pa

from cloudtap.ship.ipc_measure import MetadataTooLarge, measure_ipc

MAGIC = b"CTAP"
#: Frame layout version this build writes and reads.
WIRE_VERSION = 1
#: Version of the record columns (bumped when agents change what a kind's columns mean).
SCHEMA_VERSION = 1
#: Column versions this build decodes (:func:`check_readable`).
READABLE_SCHEMA_VERSIONS: tuple[int, ...] = (SCHEMA_VERSION,)
CODEC = "zstd"
#: Streams the server stores; other ``edges_<N>s`` intervals are accepted too (see :func:`check_kind`).
KNOWN_KINDS = ("flows", "edges_1s", "edges_60s", "requests")
MAX_HEADER_BYTES = 1 << 20
MAX_KINDS = 64
MAX_AGENT_ID = 256
#: Most bytes one kind's section may decode to (Arrow buffers after zstd), however small it is compressed.
MAX_DECODED_BYTES_PER_KIND = 512 << 20
#: ... and at most this much per announced row (all columns), plus ``DECODE_SLACK_BYTES`` per section.
MAX_ROW_BYTES = 64 << 10
DECODE_SLACK_BYTES = 1 << 20
#: Largest Arrow message metadata (schema or batch description) in a section.
MAX_METADATA_BYTES = 1 << 20

_PREFIX = struct.Struct("<4sHHII")
PREFIX_BYTES = _PREFIX.size
_KIND_RE = re.compile(r"^(flows|requests|edges_[0-9]+(\.[0-9]+)?s)$")


class WireError(ValueError):
    """A batch frame cannot be decoded; the message says exactly why, ``reason`` in a few words (a counter).

    Reasons: ``malformed``, ``unsupported version``, ``unknown kind``, ``too large``.
    """

    def __init__(self, message: str, reason: str = "malformed") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class KindEntry:
    """One kind's section in the frame."""

    kind: str
    rows: int
    bytes: int
    crc32: int


@dataclass(frozen=True)
class BatchHeader:
    """The decoded JSON header of a frame (without the tables)."""

    agent_id: str
    seq: int
    created_ns: int
    schema_version: int
    kinds: tuple[KindEntry, ...]
    header_bytes: int  #: size of prefix + JSON header: where the first section starts

    @property
    def rows(self) -> dict[str, int]:
        """Rows per kind, as announced by the header."""
        return {k.kind: k.rows for k in self.kinds}

    @property
    def frame_bytes(self) -> int:
        """Size the whole frame must have."""
        return self.header_bytes + sum(k.bytes for k in self.kinds)


def check_kind(kind: str) -> str:
    """Validate a stream name (``flows``, ``requests`` or ``edges_<interval>s``).

    Args:
        kind: stream name.
    Returns:
        ``kind`` unchanged.
    Raises:
        WireError: the name is not a stream kind.
    """
    if not isinstance(kind, str) or not _KIND_RE.match(kind):
        expected = "flows, requests or edges_<seconds>s"
        raise WireError(f"kind unknown: {kind!r} (expected {expected})", "unknown kind")
    return kind


def check_key(agent_id: object, seq: object) -> None:
    """Validate a batch's idempotency key: ``agent_id`` of 1..256 characters, ``seq`` an integer >= 0.

    Raises:
        WireError: either is invalid.
    """
    _check_agent_id(agent_id)
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise WireError(f"seq must be an integer >= 0, got {seq!r}")


def _check_agent_id(agent_id: object) -> None:
    if not isinstance(agent_id, str) or not 0 < len(agent_id) <= MAX_AGENT_ID:
        raise WireError(f"agent_id must be a string of 1..{MAX_AGENT_ID} characters, got {agent_id!r:.80}")


def write_header(agent_id: str, seq: int, created_ns: int, kinds: Sequence[KindEntry]) -> bytes:
    """The frame's prefix and JSON header, announcing ``kinds`` (whose sections follow in this order).

    The caller checks the key (:func:`check_key`) and the kinds (:func:`check_kind`).
    """
    entries = [{"kind": k.kind, "rows": k.rows, "bytes": k.bytes, "crc32": k.crc32} for k in kinds]
    header = json.dumps(
        {
            "agent_id": agent_id,
            "seq": seq,
            "created_ns": created_ns,
            "schema_version": SCHEMA_VERSION,
            "codec": CODEC,
            "kinds": entries,
        },
        separators=(",", ":"),
        sort_keys=True,
    ).encode("utf-8")
    return _PREFIX.pack(MAGIC, WIRE_VERSION, 0, len(header), zlib.crc32(header)) + header


def read_header(data: bytes | bytearray | memoryview) -> BatchHeader:
    """Decode and check a frame's prefix and JSON header, without touching the tables.

    Args:
        data: the frame (or at least its beginning; section lengths are not checked here).
    Returns:
        The header.
    Raises:
        WireError: bad magic, unsupported version/flags, truncated or malformed header.
    """
    view = memoryview(data)
    if len(view) < PREFIX_BYTES:
        if bytes(view[:4]) != MAGIC[: len(view[:4])]:
            raise WireError(f"bad magic {bytes(view[:4])!r} (expected {MAGIC!r})")
        raise WireError(f"truncated: {len(view)} bytes, the frame prefix alone is {PREFIX_BYTES}")
    magic, version, flags, header_len, header_crc = _PREFIX.unpack_from(view, 0)
    if magic != MAGIC:
        raise WireError(f"bad magic {magic!r} (expected {MAGIC!r})")
    if version != WIRE_VERSION:
        raise WireError(
            f"unsupported wire version {version} (this build reads {WIRE_VERSION})", "unsupported version"
        )
    if flags != 0:
        raise WireError(f"unsupported flags 0x{flags:04x} (this build knows none)")
    if header_len > MAX_HEADER_BYTES:
        raise WireError(f"header length {header_len} exceeds {MAX_HEADER_BYTES}")
    end = PREFIX_BYTES + header_len
    if len(view) < end:
        raise WireError(f"truncated: header needs {end} bytes, got {len(view)}")
    raw = view[PREFIX_BYTES:end]
    if zlib.crc32(raw) != header_crc:
        raise WireError("header CRC-32 mismatch (corrupt header)")
    try:
        obj = json.loads(bytes(raw).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise WireError(f"header is not valid JSON: {exc}") from None
    return _parse_header(obj, end)


def _parse_header(obj: object, header_bytes: int) -> BatchHeader:
    if not isinstance(obj, dict):
        raise WireError("header is not a JSON object")
    _check_agent_id(obj.get("agent_id"))
    seq = _int_field(obj, "seq")
    created_ns = _int_field(obj, "created_ns")
    schema_version = _int_field(obj, "schema_version")
    if schema_version < 1:
        raise WireError(f"schema_version must be >= 1, got {schema_version}")
    if obj.get("codec") != CODEC:
        raise WireError(f"unsupported codec {obj.get('codec')!r} (expected {CODEC!r})")
    raw_kinds = obj.get("kinds")
    if not isinstance(raw_kinds, list) or len(raw_kinds) > MAX_KINDS:
        raise WireError(f"header field 'kinds' must be a list of at most {MAX_KINDS} entries")
    kinds: list[KindEntry] = []
    seen: set[str] = set()
    for entry in raw_kinds:
        if not isinstance(entry, dict):
            raise WireError("header 'kinds' entry is not an object")
        kind = check_kind(entry.get("kind"))  # type: ignore[arg-type]
        if kind in seen:
            raise WireError(f"kind {kind!r} appears twice in the header")
        seen.add(kind)
        kinds.append(
            KindEntry(kind, _int_field(entry, "rows"), _int_field(entry, "bytes"), _int_field(entry, "crc32"))
        )
    return BatchHeader(obj["agent_id"], seq, created_ns, schema_version, tuple(kinds), header_bytes)


def _int_field(obj: dict[str, object], name: str) -> int:
    value = obj.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise WireError(f"header field {name!r} must be an integer >= 0, got {value!r:.40}")
    return value


def check_readable(
    header: BatchHeader,
    kinds: Collection[str] | None = None,
    schema_versions: Collection[int] = READABLE_SCHEMA_VERSIONS,
) -> None:
    """Refuse a frame this reader cannot use, from its header alone (before anything is decompressed).

    Args:
        header: from :func:`read_header`.
        kinds: kinds the reader stores (None: any that passes :func:`check_kind`).
        schema_versions: column versions the reader understands.
    Raises:
        WireError: unsupported ``schema_version`` or a kind outside ``kinds``.
    """
    if header.schema_version not in schema_versions:
        readable = ", ".join(str(v) for v in sorted(schema_versions))
        raise WireError(
            f"schema_version {header.schema_version} is not supported (this build reads schema_version "
            f"{readable}): upgrade the server or run an agent of the same release",
            "unsupported version",
        )
    unknown = [k.kind for k in header.kinds if kinds is not None and k.kind not in kinds]
    if unknown:
        raise WireError(f"unknown stream kind(s) {unknown}; expected {sorted(kinds or ())}", "unknown kind")


def check_sections(
    data: bytes | bytearray | memoryview, header: BatchHeader, max_decoded_bytes: int
) -> list[tuple[KindEntry, pa.Buffer]]:
    """Check the frame's length and every section's CRC-32, row count and decoded size, before any is decompressed.

    Args:
        data: the whole frame, whose header is ``header``.
        max_decoded_bytes: most bytes one kind may decode to; a kind may also use at most
            ``MAX_ROW_BYTES`` per announced row (+ ``DECODE_SLACK_BYTES``). Both are read from the
            Arrow metadata of every section.
    Returns:
        Each kind's entry and its section (still compressed), in frame order.
    Raises:
        WireError: truncated, trailing bytes, CRC or row-count mismatch, decoded size over the limits,
            corrupt Arrow IPC metadata.
    """
    view = memoryview(data)
    expected = header.frame_bytes
    if len(view) < expected:
        raise WireError(f"truncated: frame announces {expected} bytes, got {len(view)}")
    if len(view) > expected:
        raise WireError(f"{len(view) - expected} trailing bytes after the frame ({expected} bytes)")
    buffer = pa.py_buffer(data)
    sections: list[tuple[KindEntry, pa.Buffer]] = []
    offset = header.header_bytes
    for entry in header.kinds:  # every section is checked before any is decompressed
        if zlib.crc32(view[offset : offset + entry.bytes]) != entry.crc32:
            raise WireError(f"kind {entry.kind!r}: section CRC-32 mismatch (corrupt payload)")
        section = buffer.slice(offset, entry.bytes)
        _check_decoded_size(entry, section, max_decoded_bytes)
        sections.append((entry, section))
        offset += entry.bytes
    return sections


def _check_decoded_size(entry: KindEntry, section: pa.Buffer, max_decoded_bytes: int) -> None:
    rows, decoded = _measure_ipc(section, entry.kind)
    if rows != entry.rows:
        raise WireError(f"kind {entry.kind!r}: header announces {entry.rows} rows, the stream has {rows}")
    limit = min(max_decoded_bytes, entry.rows * MAX_ROW_BYTES + DECODE_SLACK_BYTES)
    if decoded > limit:
        raise WireError(
            f"kind {entry.kind!r}: {_size(entry.bytes)} would decode to {_size(decoded)}, over its limit of "
            f"{_size(limit)} ({_size(max_decoded_bytes)} per kind, {_size(MAX_ROW_BYTES)} per announced row "
            f"+ {_size(DECODE_SLACK_BYTES)}); refused before decompressing",
            "too large",
        )


def _size(n: int) -> str:
    """``n`` bytes for a reader: 632 bytes, 64 KiB, 300 MiB, 1.5 GiB."""
    unit = max((u for u in range(4) if n >= 1 << (10 * u)), default=0)
    return f"{n} bytes" if unit == 0 else f"{n / (1 << (10 * unit)):.4g} {('KiB', 'MiB', 'GiB')[unit - 1]}"


def _measure_ipc(section: pa.Buffer, kind: str) -> tuple[int, int]:
    """Rows and decoded bytes of one kind's stream (:func:`~cloudtap.ship.ipc_measure.measure_ipc`), as WireErrors."""
    try:
        return measure_ipc(section, MAX_METADATA_BYTES)
    except MetadataTooLarge as exc:
        raise WireError(f"kind {kind!r}: {exc}", "too large") from None
    except (pa.ArrowException, OSError, ValueError, IndexError, KeyError, TypeError, struct.error) as exc:
        raise WireError(f"kind {kind!r}: corrupt Arrow IPC stream: {exc}") from None

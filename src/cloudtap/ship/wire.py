"""The batch wire format: what an agent POSTs to the server and keeps in its spool.

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
different rows.
"""

from __future__ import annotations

import json
import re
import struct
import time
import zlib
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.ipc as ipc

MAGIC = b"CTAP"
#: Frame layout version this build writes and reads.
WIRE_VERSION = 1
#: Version of the record columns (bumped when agents change what a kind's columns mean).
SCHEMA_VERSION = 1
CODEC = "zstd"
#: Streams the server stores; other ``edges_<N>s`` intervals are accepted too (see :func:`check_kind`).
KNOWN_KINDS = ("flows", "edges_1s", "edges_60s")
MAX_HEADER_BYTES = 1 << 20
MAX_KINDS = 64
MAX_AGENT_ID = 256

_PREFIX = struct.Struct("<4sHHII")
PREFIX_BYTES = _PREFIX.size
_KIND_RE = re.compile(r"^(flows|edges_[0-9]+(\.[0-9]+)?s)$")
_WRITE_OPTIONS = ipc.IpcWriteOptions(compression=CODEC)
#: Rows per Arrow record batch inside a kind's stream.
_CHUNK_ROWS = 65536


class WireError(ValueError):
    """A batch frame cannot be decoded; the message says exactly why."""


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


@dataclass
class WireBatch:
    """A decoded batch."""

    agent_id: str
    seq: int
    created_ns: int
    tables: dict[str, pa.Table]
    schema_version: int = SCHEMA_VERSION
    frame_bytes: int = 0
    rows: dict[str, int] = field(default_factory=dict)


def check_kind(kind: str) -> str:
    """Validate a stream name (``flows`` or ``edges_<interval>s``).

    Args:
        kind: stream name.
    Returns:
        ``kind`` unchanged.
    Raises:
        WireError: the name is not a stream kind.
    """
    if not isinstance(kind, str) or not _KIND_RE.match(kind):
        raise WireError(f"kind unknown: {kind!r} (expected flows or edges_<seconds>s)")
    return kind


def encode_batch(
    agent_id: str, seq: int, tables: dict[str, pa.Table], created_ns: int | None = None
) -> bytes:
    """Encode one batch of tables into a frame.

    Args:
        agent_id: identity of the producing agent (1..256 characters).
        seq: batch sequence number (>= 0); (agent_id, seq) is the server's idempotency key.
        tables: kind -> table; kinds must pass :func:`check_kind`.
        created_ns: creation time (UTC ns); now when omitted.
    Returns:
        The frame bytes.
    Raises:
        WireError: invalid agent_id, seq or kind.
    """
    _check_agent_id(agent_id)
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise WireError(f"seq must be an integer >= 0, got {seq!r}")
    if len(tables) > MAX_KINDS:
        raise WireError(f"{len(tables)} kinds in one batch (at most {MAX_KINDS})")
    sections: list[bytes] = []
    entries: list[dict[str, object]] = []
    for kind, table in tables.items():
        check_kind(kind)
        payload = _write_ipc(table)
        sections.append(payload)
        entries.append(
            {"kind": kind, "rows": table.num_rows, "bytes": len(payload), "crc32": zlib.crc32(payload)}
        )
    header = json.dumps(
        {
            "agent_id": agent_id,
            "seq": seq,
            "created_ns": time.time_ns() if created_ns is None else int(created_ns),
            "schema_version": SCHEMA_VERSION,
            "codec": CODEC,
            "kinds": entries,
        },
        separators=(",", ":"),
        sort_keys=True,
    ).encode("utf-8")
    prefix = _PREFIX.pack(MAGIC, WIRE_VERSION, 0, len(header), zlib.crc32(header))
    return b"".join([prefix, header, *sections])


def _write_ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, table.schema, options=_WRITE_OPTIONS) as writer:
        writer.write_table(table, max_chunksize=_CHUNK_ROWS)
    payload: bytes = sink.getvalue().to_pybytes()
    return payload


def _check_agent_id(agent_id: object) -> None:
    if not isinstance(agent_id, str) or not 0 < len(agent_id) <= MAX_AGENT_ID:
        raise WireError(f"agent_id must be a string of 1..{MAX_AGENT_ID} characters, got {agent_id!r:.80}")


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
        raise WireError(f"unsupported wire version {version} (this build reads {WIRE_VERSION})")
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


def decode_batch(data: bytes | bytearray | memoryview) -> WireBatch:
    """Decode a frame into its tables, checking every length, CRC and row count.

    Args:
        data: one complete frame.
    Returns:
        The batch.
    Raises:
        WireError: bad magic, unsupported version, truncated, trailing bytes, CRC or row-count mismatch,
            unknown kind, corrupt Arrow IPC.
    """
    header = read_header(data)
    view = memoryview(data)
    expected = header.frame_bytes
    if len(view) < expected:
        raise WireError(f"truncated: frame announces {expected} bytes, got {len(view)}")
    if len(view) > expected:
        raise WireError(f"{len(view) - expected} trailing bytes after the frame ({expected} bytes)")
    buffer = pa.py_buffer(data)
    tables: dict[str, pa.Table] = {}
    offset = header.header_bytes
    for entry in header.kinds:
        section = view[offset : offset + entry.bytes]
        if zlib.crc32(section) != entry.crc32:
            raise WireError(f"kind {entry.kind!r}: section CRC-32 mismatch (corrupt payload)")
        table = _read_ipc(buffer.slice(offset, entry.bytes), entry.kind)
        if table.num_rows != entry.rows:
            raise WireError(
                f"kind {entry.kind!r}: header announces {entry.rows} rows, the stream has {table.num_rows}"
            )
        tables[entry.kind] = table
        offset += entry.bytes
    return WireBatch(
        header.agent_id,
        header.seq,
        header.created_ns,
        tables,
        schema_version=header.schema_version,
        frame_bytes=expected,
        rows=header.rows,
    )


def _read_ipc(buffer: pa.Buffer, kind: str) -> pa.Table:
    try:
        with ipc.open_stream(buffer) as reader:
            table = reader.read_all()
        table.validate(full=True)
    except (pa.ArrowException, OSError, ValueError, IndexError, KeyError, TypeError) as exc:
        raise WireError(f"kind {kind!r}: corrupt Arrow IPC stream: {exc}") from None
    return table

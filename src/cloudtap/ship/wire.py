"""The batch wire format: what an agent POSTs to the server and keeps in its spool.

A batch is a frame (layout, header and the checks made before decompressing: :mod:`cloudtap.ship.frame`)
holding one Arrow IPC stream per kind, its buffers zstd-compressed. This module encodes tables into
those sections and frames them (:func:`encode_batch`, or :func:`encode_sections` once and
:func:`frame_sections` per send), and decodes a frame back into tables (:func:`decode_batch`).
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Collection
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.ipc as ipc

from cloudtap.ship.frame import (
    CODEC,
    MAX_DECODED_BYTES_PER_KIND,
    MAX_KINDS,
    READABLE_SCHEMA_VERSIONS,
    SCHEMA_VERSION,
    KindEntry,
    WireError,
    check_key,
    check_kind,
    check_readable,
    check_sections,
    read_header,
    write_header,
)

_WRITE_OPTIONS = ipc.IpcWriteOptions(compression=CODEC)
#: Rows per Arrow record batch inside a kind's stream.
_CHUNK_ROWS = 65536


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


def encode_batch(
    agent_id: str, seq: int, tables: dict[str, pa.Table], created_ns: int | None = None
) -> bytes:
    """Encode one batch of tables into a frame.

    Args:
        agent_id: identity of the producing agent (1..256 characters).
        seq: batch sequence number (>= 0); (agent_id, seq) is the server's idempotency key.
        tables: kind -> table; kinds must pass :func:`~cloudtap.ship.frame.check_kind`.
        created_ns: creation time (UTC ns); now when omitted.
    Returns:
        The frame bytes.
    Raises:
        WireError: invalid agent_id, seq or kind.
    """
    check_key(agent_id, seq)
    return frame_sections(agent_id, seq, encode_sections(tables), created_ns)


@dataclass(frozen=True)
class Section:
    """One kind's table, encoded: its header entry and its bytes."""

    entry: KindEntry
    payload: bytes


def encode_sections(tables: dict[str, pa.Table]) -> tuple[Section, ...]:
    """The sections of a frame (the costly part of :func:`encode_batch`: Arrow IPC + zstd), in order.

    Raises:
        WireError: too many kinds, or a kind that fails :func:`~cloudtap.ship.frame.check_kind`.
    """
    if len(tables) > MAX_KINDS:
        raise WireError(f"{len(tables)} kinds in one batch (at most {MAX_KINDS})")
    sections = []
    for kind, table in tables.items():
        check_kind(kind)
        payload = _write_ipc(table)
        sections.append(Section(KindEntry(kind, table.num_rows, len(payload), zlib.crc32(payload)), payload))
    return tuple(sections)


def frame_sections(
    agent_id: str, seq: int, sections: tuple[Section, ...], created_ns: int | None = None
) -> bytes:
    """Frame encoded sections under a header (``agent_id``, ``seq``): cheap, so sections can be reused.

    Raises:
        WireError: invalid agent_id or seq.
    """
    check_key(agent_id, seq)
    created = time.time_ns() if created_ns is None else int(created_ns)
    header = write_header(agent_id, seq, created, [s.entry for s in sections])
    return b"".join([header, *(s.payload for s in sections)])


def _write_ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, table.schema, options=_WRITE_OPTIONS) as writer:
        writer.write_table(table, max_chunksize=_CHUNK_ROWS)
    payload: bytes = sink.getvalue().to_pybytes()
    return payload


def decode_batch(
    data: bytes | bytearray | memoryview,
    kinds: Collection[str] | None = None,
    schema_versions: Collection[int] = READABLE_SCHEMA_VERSIONS,
    max_decoded_bytes: int = MAX_DECODED_BYTES_PER_KIND,
) -> WireBatch:
    """Decode a frame into its tables, checking every length, CRC, row count and decoded size.

    Args:
        data: one complete frame.
        kinds, schema_versions: see :func:`~cloudtap.ship.frame.check_readable` (checked first).
        max_decoded_bytes: most bytes one kind may decode to; a kind may also use at most
            ``MAX_ROW_BYTES`` per announced row (+ ``DECODE_SLACK_BYTES``). Both are checked from the
            Arrow metadata of every section before any section is decompressed
            (:func:`~cloudtap.ship.frame.check_sections`).
    Returns:
        The batch.
    Raises:
        WireError: bad magic, unsupported version, truncated, trailing bytes, CRC or row-count mismatch,
            unknown kind, decoded size over the limits, corrupt Arrow IPC.
    """
    header = read_header(data)
    check_readable(header, kinds, schema_versions)
    sections = check_sections(data, header, max_decoded_bytes)
    tables: dict[str, pa.Table] = {}
    for entry, section in sections:
        table = _read_ipc(section, entry.kind)
        if table.num_rows != entry.rows:
            raise WireError(
                f"kind {entry.kind!r}: header announces {entry.rows} rows, the stream has {table.num_rows}"
            )
        tables[entry.kind] = table
    return WireBatch(
        header.agent_id,
        header.seq,
        header.created_ns,
        tables,
        schema_version=header.schema_version,
        frame_bytes=header.frame_bytes,
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

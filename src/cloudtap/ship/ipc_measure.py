"""Rows and decoded size of an Arrow IPC stream, from its message metadata alone (nothing is decompressed).

The server checks what a batch would inflate to before it decompresses a byte (docs/shipping.md): each
record batch's metadata (Arrow ``Message.fbs``, FlatBuffers, read by hand here) lists its buffers, and a
compressed buffer starts with its inflated length.
"""

from __future__ import annotations

import struct

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

_I32, _U32, _U16, _I64 = (struct.Struct(f"<{c}") for c in "iIHq")
_BATCH_MESSAGES = ("record batch", "dictionary batch")


class MetadataTooLarge(ValueError):
    """One message's metadata is over the cap (a decoder would have to parse that much to size it)."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"Arrow metadata of {size} bytes (at most {limit})")
        self.size = size


def measure_ipc(section: pa.Buffer, max_metadata_bytes: int) -> tuple[int, int]:
    """Rows and decoded bytes of one Arrow IPC stream.

    Raises:
        MetadataTooLarge: a message's metadata is over ``max_metadata_bytes``.
        ValueError, pyarrow.ArrowException, OSError, IndexError, KeyError, TypeError, struct.error: the
            stream is malformed.
    """
    rows = decoded = messages = 0
    reader = ipc.MessageReader.open_stream(section)
    for message in iter(reader.read_next_message, None):  # ends when it raises StopIteration
        if message.metadata.size > max_metadata_bytes:
            raise MetadataTooLarge(message.metadata.size, max_metadata_bytes)
        if (messages == 0) != (message.type == "schema"):
            raise ValueError(f"{message.type} message at position {messages} (one schema comes first)")
        messages += 1
        if message.type in _BATCH_MESSAGES:
            body = message.body if message.body is not None else pa.py_buffer(b"")
            n, size = _batch_size(message.metadata.to_pybytes(), body, message.type == "dictionary batch")
            rows += n if message.type == "record batch" else 0
            decoded += size
    if not messages:
        raise ValueError("no schema message")
    return rows, decoded


def _batch_size(meta: bytes, body: pa.Buffer, dictionary: bool) -> tuple[int, int]:
    """Rows and decoded bytes of one (dictionary) record batch message (Arrow ``Message.fbs``)."""
    header = _fb_table(meta, _fb_field(meta, _fb_table(meta, 0), 2))  # Message.header
    if dictionary:
        header = _fb_table(meta, _fb_field(meta, header, 1))  # DictionaryBatch.data
    length_at = _fb_field(meta, header, 0)  # RecordBatch.length
    buffers_at = _fb_field(meta, header, 2)  # RecordBatch.buffers
    rows = 0 if length_at is None else _fb_read(_I64, meta, length_at)
    if rows < 0:
        raise ValueError(f"record batch of {rows} rows")
    if buffers_at is None:
        return rows, 0
    vector = buffers_at + _fb_read(_U32, meta, buffers_at)  # [struct Buffer {offset: long, length: long}]
    count = _fb_read(_U32, meta, vector)
    if vector + 4 + 16 * count > len(meta):
        raise ValueError("record batch metadata lists more buffers than it holds")
    spans = np.frombuffer(meta, "<i8", 2 * count, vector + 4).reshape(count, 2)
    starts, lengths = spans[spans[:, 1] != 0].T
    if (starts < 0).any() or (lengths < 0).any() or (starts > body.size - lengths).any():
        raise ValueError("record batch buffer outside its message body")
    if _fb_field(meta, header, 3) is None:  # RecordBatch.compression absent: stored as is
        return rows, int(lengths.sum())
    if (lengths < 8).any():
        raise ValueError("compressed buffer shorter than its length prefix")
    raw = np.frombuffer(body, np.uint8)
    declared = raw[starts[:, None] + np.arange(8)].copy().view("<i8")[:, 0]  # each buffer's inflated size
    if (declared < -1).any():
        raise ValueError("negative uncompressed buffer length")
    sizes = np.where(declared == -1, lengths - 8, np.minimum(declared, 1 << 40))  # no int64 overflow
    return rows, int(sizes.sum())


def _fb_read(fmt: struct.Struct, meta: bytes, pos: int) -> int:
    if not 0 <= pos <= len(meta) - fmt.size:
        raise ValueError("Arrow metadata offset out of bounds")
    value: int = fmt.unpack_from(meta, pos)[0]
    return value


def _fb_table(meta: bytes, ref: int | None) -> tuple[int, int]:
    """(table, vtable) positions of the table the uoffset at ``ref`` points to."""
    if ref is None:
        raise ValueError("Arrow message without its batch description")
    pos = ref + _fb_read(_U32, meta, ref)
    return pos, pos - _fb_read(_I32, meta, pos)


def _fb_field(meta: bytes, table: tuple[int, int], index: int) -> int | None:
    """Position of field ``index`` of ``table`` (None: absent, i.e. default)."""
    pos, vtable = table
    if 4 + 2 * index >= _fb_read(_U16, meta, vtable):
        return None
    offset = _fb_read(_U16, meta, vtable + 4 + 2 * index)
    return pos + offset if offset else None

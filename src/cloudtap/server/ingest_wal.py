"""GroupWal: write-ahead files of coalesced inserts, so a crash between data and log never doubles rows.

One file per group, ``<digest>.wal``: magic ``CTWAL1``, a uint32 LE header length, a JSON header
(``digest``, ``members`` as ``[agent_id, seq]``, ``split_from``), then each member's wire frame as
uint32 LE length + bytes, then a CRC-32 of everything before it. Written to a temporary file,
fsync'd, renamed, directory fsync'd: a file that exists is complete; a torn one (bad CRC) was never
acted on (no insert starts before the file is durable) and is dropped.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

_MAGIC = b"CTWAL1"
_U32 = struct.Struct("<I")


@dataclass
class WalRecord:
    """One group as written: its digest, members (agent, seq), frames, and the block it was split from."""

    digest: str
    members: list[tuple[str, int]]
    frames: list[bytes]
    split_from: int | None = None


class GroupWal:
    """A directory of group write-ahead files.

    Args:
        directory: created if missing.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        """File of the group ``digest``."""
        return self.directory / f"{digest}.wal"

    def write(self, record: WalRecord) -> Path:
        """Write (or rewrite) ``record`` durably; returns its path."""
        header = json.dumps(
            {"digest": record.digest, "members": record.members, "split_from": record.split_from}
        ).encode()
        parts = [_MAGIC, _U32.pack(len(header)), header]
        for frame in record.frames:
            parts += [_U32.pack(len(frame)), frame]
        body = b"".join(parts)
        final = self.path(record.digest)
        tmp = final.with_suffix(".part")
        with open(tmp, "wb") as fh:
            fh.write(body + _U32.pack(zlib.crc32(body)))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        self._sync_dir()
        return final

    def remove(self, digest: str) -> None:
        """Forget a group once its data and log rows are stored (no fsync: a replay is idempotent)."""
        self.path(digest).unlink(missing_ok=True)

    def pending(self) -> list[WalRecord]:
        """Complete records left by an earlier run, oldest first; torn files are deleted."""
        out = []
        for tmp in self.directory.glob("*.part"):
            tmp.unlink(missing_ok=True)
        for path in sorted(self.directory.glob("*.wal"), key=lambda p: p.stat().st_mtime):
            record = _read(path.read_bytes())
            if record is None:
                path.unlink(missing_ok=True)
                continue
            out.append(record)
        return out

    def _sync_dir(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _read(data: bytes) -> WalRecord | None:
    """Parse one file; None when torn or not a WAL file."""
    if len(data) < len(_MAGIC) + 8 or not data.startswith(_MAGIC):
        return None
    body, (crc,) = data[:-4], _U32.unpack(data[-4:])
    if zlib.crc32(body) != crc:
        return None
    pos = len(_MAGIC)
    (hlen,) = _U32.unpack_from(body, pos)
    pos += 4
    header = json.loads(body[pos : pos + hlen])
    pos += hlen
    frames = []
    while pos < len(body):
        (n,) = _U32.unpack_from(body, pos)
        frames.append(body[pos + 4 : pos + 4 + n])
        pos += 4 + n
    members = [(str(a), int(s)) for a, s in header["members"]]
    return WalRecord(header["digest"], members, frames, header.get("split_from"))

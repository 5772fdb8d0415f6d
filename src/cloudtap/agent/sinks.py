"""Record sinks: where the agent's flow records and edge metrics go.

A sink receives Arrow tables (already annotated with the agent and VM identity) and reports how many
bytes it wrote, so the agent can state its wire reduction. ``FileSink`` writes rotated local files;
the server sink (HTTP, spooling) plugs in behind the same protocol.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pyarrow as pa

from cloudtap.errors import ConfigError

if TYPE_CHECKING:
    import pyarrow.parquet as pq

    from cloudtap.agent.config import OutputSection

#: Rows per parquet row group (buffered in memory until reached or until rotation).
ROW_GROUP_ROWS = 65536


class RecordSink(Protocol):
    """Destination of flow records and edge metrics."""

    bytes_written: int

    def write(self, kind: str, table: pa.Table) -> None:
        """Append ``table`` to the stream ``kind`` (``flows``, ``edges_1s``, ``edges_60s``...)."""
        ...

    def rotate(self) -> None:
        """Close the current files; the next write starts new ones."""
        ...

    def close(self) -> None:
        """Flush and close everything."""
        ...


class FileSink:
    """Rotated local files, one per kind and period: ``<dir>/<kind>/<kind>-<utc time>.<ext>``.

    Parquet files are complete only after rotation (the footer is written on close); readers should
    take files whose name is not the newest. jsonl files are readable at any time.
    """

    def __init__(self, directory: Path, fmt: str = "parquet", rotate_s: float = 60.0, keep_files: int = 1440) -> None:
        if fmt not in ("parquet", "jsonl"):
            raise ConfigError(f"unknown output format {fmt!r} (parquet or jsonl)")
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create output directory {self.directory}: {exc.strerror}") from exc
        self.format = fmt
        self.rotate_s = rotate_s
        self.keep_files = keep_files
        self.bytes_written = 0
        self.files_written = 0
        self._writers: dict[str, pq.ParquetWriter] = {}
        self._jsonl: dict[str, object] = {}
        self._buffers: dict[str, list[pa.Table]] = {}
        self._paths: dict[str, Path] = {}
        self._opened_at = time.monotonic()

    def write(self, kind: str, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        if time.monotonic() - self._opened_at >= self.rotate_s:
            self.rotate()
        path = self._paths.get(kind)
        if path is None:
            path = self._new_path(kind)
        if self.format == "parquet":
            # Buffer into large row groups: small ones cost more in metadata than the rows they hold.
            buffered = self._buffers.setdefault(kind, [])
            buffered.append(table)
            if sum(t.num_rows for t in buffered) >= ROW_GROUP_ROWS:
                self._write_row_group(kind)
        else:
            fh = self._jsonl.get(kind)
            if fh is None:
                fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - kept open until rotation
                self._jsonl[kind] = fh
            names = table.column_names
            for row in table.to_pylist():
                fh.write(json.dumps({n: row[n] for n in names}, separators=(",", ":")) + "\n")  # type: ignore[attr-defined]

    def _write_row_group(self, kind: str) -> None:
        tables = self._buffers.pop(kind, [])
        if not tables:
            return
        table = pa.concat_tables(tables, promote_options="default")
        writer = self._writers.get(kind)
        if writer is None:
            import pyarrow.parquet as pq  # loaded by the first parquet file only (~9 MiB)

            writer = pq.ParquetWriter(self._paths[kind], table.schema, compression="zstd", compression_level=6)
            self._writers[kind] = writer
        writer.write_table(table, row_group_size=max(ROW_GROUP_ROWS, table.num_rows))

    def _new_path(self, kind: str) -> Path:
        folder = self.directory / kind
        folder.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        ext = "parquet" if self.format == "parquet" else "jsonl"
        path = folder / f"{kind}-{stamp}-{time.monotonic_ns() % 1_000_000:06d}.{ext}"
        self._paths[kind] = path
        return path

    def rotate(self) -> None:
        for kind in list(self._buffers):
            self._write_row_group(kind)
        for writer in self._writers.values():
            writer.close()
        for fh in self._jsonl.values():
            fh.close()  # type: ignore[attr-defined]
        for kind, path in self._paths.items():
            if path.exists():
                self.bytes_written += path.stat().st_size
                self.files_written += 1
            self._prune(kind)
        self._writers.clear()
        self._jsonl.clear()
        self._paths.clear()
        self._opened_at = time.monotonic()

    def _prune(self, kind: str) -> None:
        files = sorted((self.directory / kind).glob(f"{kind}-*"))
        for old in files[: max(0, len(files) - self.keep_files)]:
            old.unlink(missing_ok=True)

    def pending_bytes(self) -> int:
        """Bytes in files not rotated yet (parquet: written so far, before the footer)."""
        return sum(p.stat().st_size for p in self._paths.values() if p.exists())

    def close(self) -> None:
        self.rotate()


class MemorySink:
    """Keeps every table in memory (tests, notebooks)."""

    def __init__(self) -> None:
        self.tables: dict[str, list[pa.Table]] = {}
        self.bytes_written = 0

    def write(self, kind: str, table: pa.Table) -> None:
        self.tables.setdefault(kind, []).append(table)
        self.bytes_written += table.nbytes

    def table(self, kind: str) -> pa.Table | None:
        """Everything written to ``kind`` as one table."""
        parts = self.tables.get(kind)
        return pa.concat_tables(parts) if parts else None

    def rotate(self) -> None:
        return None

    def close(self) -> None:
        return None


def record_sink(out: OutputSection, agent_id: str, credentials: Any) -> RecordSink:
    """The sink ``output`` configures: rotated local files, or shipping to the server (spooled first).

    Raises:
        ConfigError: ``output.sink: server`` without the credential a controller issues at registration.
    """
    if out.sink == "server":
        from cloudtap.ship.server_sink import ServerSink
        from cloudtap.ship.spool import Spool
        from cloudtap.ship.transport import HttpTransport

        if credentials is None:
            raise ConfigError("output.sink 'server' needs controller.url: the server takes batches only with the "
                              "credential its controller issues at registration")  # fmt: skip
        url = out.server_url.rstrip("/") + "/api/v1/ingest"
        transport = HttpTransport(url, timeout_s=10.0, token=credentials.credential)
        spool = Spool(out.spool_directory, max_bytes=out.spool_max_mib << 20)
        return ServerSink(agent_id, transport, spool, flush_interval_s=out.flush_interval_s)
    return FileSink(out.directory, out.format, out.rotate_s, out.keep_files)

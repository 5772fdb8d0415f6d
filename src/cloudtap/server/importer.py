"""Captures -> flows and edges -> the store: forensics on an existing pcap (`cloudtap import`)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from cloudtap.meter import MeterConfig, MeterResult, edges_with_text, meter_file
from cloudtap.server.store.base import BatchKey

Progress = Callable[[int, int], None]


@dataclass
class ImportedCapture:
    """What one import produced."""

    result: MeterResult
    tables: dict[str, pa.Table]
    key: BatchKey


def _annotate(table: pa.Table, source: str) -> pa.Table:
    n = table.num_rows
    empty = pa.array([""] * n, pa.string())
    table = table.append_column("interface_name", empty)
    table = table.append_column("vm_domain", empty)
    table = table.append_column("vm_mac", empty)
    return table.append_column("agent_id", pa.array([source] * n, pa.string()))


def import_tables(
    paths: Sequence[Path],
    config: MeterConfig | None = None,
    bpf: str | None = None,
    progress: Progress | None = None,
    tagger: Any | None = None,
) -> ImportedCapture:
    """Meter ``paths`` as one stream and build the tables an agent would ship for them.

    The batch key is derived from the files' content hashes, so importing the same capture twice
    stores it once. With a ``tagger`` (``cloudtap.inventory.tagging.Tagger``) the tables carry cloud
    identity ids as the inventory was at each record's time.
    """
    result = meter_file(list(paths), config, bpf=bpf, progress=progress)
    digest = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as fh:
            digest.update(hashlib.file_digest(fh, "sha256").digest())
    source = "import:" + ",".join(p.name for p in paths)[:200]
    tables = {
        "flows": _annotate(result.to_arrow(), source),
        "edges_1s": _annotate(edges_with_text(result.edges(1.0)), source),
        "edges_60s": _annotate(edges_with_text(result.edges(60.0)), source),
    }
    if tagger is not None:
        tables = tagger.tag_tables(tables)
    key = BatchKey(agent_id=source, seq=int.from_bytes(digest.digest()[:7], "big"))
    return ImportedCapture(result, tables, key)

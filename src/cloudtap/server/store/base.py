"""The storage contract the ingest path and the query engine are written against.

Streams (``kind``) are what agents produce (see ``cloudtap.agent.output``): ``flows`` (flow records),
``edges_1s`` and ``edges_60s`` (edge metrics). Their Arrow columns are those the agent writes:
``cloudtap.meter.records.OUTPUT_COLUMNS`` plus ``interface_name``, ``vm_domain``, ``vm_mac``, ``agent_id``
for flows; ``time_ns``, ``client_ip``, ``server_ip``, ``server_port``, ``proto``, ``vlan``, ``tunnel_id``,
``interface`` + ``cloudtap.meter.edges.EDGE_SUMS`` + the same annotations for edges; ``requests``
(application requests): ``cloudtap.l7.records.OUTPUT_COLUMNS`` + the same annotations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import pyarrow as pa

KINDS = ("flows", "edges_1s", "edges_60s", "requests")


@dataclass(frozen=True)
class BatchKey:
    """Identifies one shipped batch: a replay of the same key must not store rows twice."""

    agent_id: str
    seq: int

    def token(self, kind: str) -> str:
        """ClickHouse insert deduplication token for this batch's ``kind`` block."""
        return f"{self.agent_id}:{self.seq}:{kind}"


@dataclass
class InsertResult:
    """What one batch insert did."""

    rows: dict[str, int] = field(default_factory=dict)  #: rows offered per kind
    duplicate: bool = False  #: the batch had been stored before; nothing was added


class FlowStore(Protocol):
    """Where flow records and edge metrics live."""

    def migrate(self) -> int:
        """Create or upgrade the schema; returns the schema version now in force."""
        ...

    def insert(self, tables: dict[str, pa.Table], key: BatchKey | None = None) -> InsertResult:
        """Store one batch (``kind`` -> table), exactly once per ``key``."""
        ...

    def query_arrow(
        self, sql: str, parameters: dict[str, Any] | None = None, settings: dict[str, Any] | None = None
    ) -> pa.Table:
        """Run a read-only query (bound ``{name:Type}`` parameters, optional query settings) and return Arrow."""
        ...

    def close(self) -> None:
        """Release the connection (and, for chDB, the data path)."""
        ...

"""RecordOutput: the agent's output stage, shared by all capture workers.

Flow records are annotated (agent id, interface, VM) and written as they come; edge deltas are
buffered and summed into 1 s and 1 min edges once a second by the housekeeping thread, so each
edge row leaves the agent once per interval, not once per flow.
"""

from __future__ import annotations

import threading

import numpy as np
import pyarrow as pa

from cloudtap.agent.identity import ObservationPoints
from cloudtap.agent.sinks import RecordSink
from cloudtap.meter._state import EDGE_DELTA_DTYPE
from cloudtap.meter.edges import aggregate_edges, edges_with_text
from cloudtap.meter.records import flows_to_arrow


class RecordOutput:
    """Thread-safe bridge from meters (callbacks) to a :class:`RecordSink`."""

    def __init__(
        self, sink: RecordSink, points: ObservationPoints, agent_id: str, edge_intervals_s: list[float]
    ) -> None:
        self.sink = sink
        self.points = points
        self.agent_id = agent_id
        self.edge_intervals_s = sorted(edge_intervals_s)
        self._lock = threading.Lock()
        self._deltas: list[np.ndarray] = []
        self.records_out = 0
        self.edges_out: dict[float, int] = {}

    def on_records(self, records: np.ndarray) -> None:
        """Meter callback: write flow records now."""
        table = self._annotate(flows_to_arrow(records))
        with self._lock:
            self.sink.write("flows", table)
            self.records_out += len(records)

    def on_edges(self, deltas: np.ndarray) -> None:
        """Meter callback: buffer edge deltas until the next housekeeping."""
        with self._lock:
            self._deltas.append(deltas)

    def housekeeping(self) -> None:
        """Sum buffered deltas into edges per interval and write them."""
        with self._lock:
            parts, self._deltas = self._deltas, []
        if not parts:
            return
        deltas = np.concatenate(parts) if len(parts) > 1 else parts[0]
        for interval in self.edge_intervals_s:
            table = self._annotate(edges_with_text(aggregate_edges(deltas, interval)))
            kind = f"edges_{int(interval)}s" if interval >= 1 else f"edges_{interval}s"
            with self._lock:
                self.sink.write(kind, table)
                self.edges_out[interval] = self.edges_out.get(interval, 0) + table.num_rows

    def flush(self) -> None:
        """Write whatever is buffered."""
        self.housekeeping()

    def bytes_out(self) -> int:
        """Bytes the sink wrote so far (including files not rotated yet)."""
        pending = getattr(self.sink, "pending_bytes", None)
        return int(self.sink.bytes_written + (pending() if pending else 0))

    def _annotate(self, table: pa.Table) -> pa.Table:
        table = self.points.annotate(table)
        return table.append_column("agent_id", pa.array([self.agent_id] * table.num_rows, pa.string()))


def empty_deltas() -> np.ndarray:
    """No edge deltas."""
    return np.zeros(0, EDGE_DELTA_DTYPE)

"""RecordOutput: the agent's output stage, shared by all capture workers.

Flow records and request records (kind ``requests``, when the workers parse them) are annotated
(agent id, interface, VM) and written as they come. Edge deltas are
buffered per interval and an interval's edges are written once, when the interval is complete: when
the newest delta is ``LATENESS_NS`` past its end (deltas of a second arrive at the latest one expiry
scan after it). So each edge leaves the agent once per interval, not once per flow or per second.
"""

from __future__ import annotations

import threading

import numpy as np
import pyarrow as pa

from cloudtap.agent.identity import ObservationPoints
from cloudtap.agent.sinks import RecordSink
from cloudtap.l7.records import requests_to_arrow
from cloudtap.meter._state import EDGE_DELTA_DTYPE
from cloudtap.meter.edges import aggregate_edges, edges_with_text
from cloudtap.meter.records import flows_to_arrow
from cloudtap.schema.request import REQ_STATUS_NAMES
from cloudtap.schema.rows import join_rows

#: How long after an interval's end its last deltas may still arrive (scan interval + margin).
LATENESS_NS = 2_000_000_000


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
        self._pending: dict[float, np.ndarray] = {w: empty_deltas() for w in self.edge_intervals_s}
        self._watermark = 0
        self.records_out = 0
        self.edges_out: dict[float, int] = {}
        self.requests_out = 0
        self.requests_by_status = np.zeros(len(REQ_STATUS_NAMES), np.int64)

    def on_records(self, records: np.ndarray) -> None:
        """Meter callback: write flow records now."""
        table = self._annotate(flows_to_arrow(records))
        with self._lock:
            self.sink.write("flows", table)
            self.records_out += len(records)

    def on_requests(self, records: np.ndarray) -> None:
        """Request parser callback: write ``L7_DTYPE`` records now, as kind ``requests``."""
        if len(records) == 0:
            return
        table = self._annotate(requests_to_arrow(records))
        by_status = np.bincount(records["status"], minlength=len(REQ_STATUS_NAMES))[: len(REQ_STATUS_NAMES)]
        with self._lock:
            self.sink.write("requests", table)
            self.requests_out += len(records)
            self.requests_by_status += by_status

    def on_edges(self, deltas: np.ndarray) -> None:
        """Meter callback: buffer edge deltas until the next housekeeping."""
        with self._lock:
            self._deltas.append(deltas)

    def housekeeping(self, final: bool = False) -> None:
        """Write the edges of every interval that is complete (all of them when ``final``)."""
        with self._lock:
            parts, self._deltas = self._deltas, []
        if parts:
            new = join_rows(parts, EDGE_DELTA_DTYPE) if len(parts) > 1 else parts[0]
            if len(new):
                self._watermark = max(self._watermark, int(new["second_ns"].max()) - LATENESS_NS)
        else:
            new = empty_deltas()
        for interval in self.edge_intervals_s:
            pending = (
                join_rows([self._pending[interval], new], EDGE_DELTA_DTYPE)
                if len(new)
                else self._pending[interval]
            )
            if not len(pending):
                continue
            width = int(round(interval * 1e9))
            if final:
                done = np.ones(len(pending), bool)
            else:
                done = (pending["second_ns"] // width) * width + width <= self._watermark
            self._pending[interval] = pending[~done]
            if not done.any():
                continue
            table = self._annotate(edges_with_text(aggregate_edges(pending[done], interval)))
            kind = f"edges_{int(interval)}s" if interval >= 1 else f"edges_{interval}s"
            with self._lock:
                self.sink.write(kind, table)
                self.edges_out[interval] = self.edges_out.get(interval, 0) + table.num_rows
            if not final:  # keep memory small: pre-sum what stays pending
                self._pending[interval] = _presum(self._pending[interval])

    def flush(self) -> None:
        """Write everything buffered, complete or not (shutdown)."""
        self.housekeeping(final=True)

    def bytes_out(self) -> int:
        """Bytes the sink wrote so far (including files not rotated yet)."""
        pending = getattr(self.sink, "pending_bytes", None)
        return int(self.sink.bytes_written + (pending() if pending else 0))

    def _annotate(self, table: pa.Table) -> pa.Table:
        table = self.points.annotate(table)
        return table.append_column("agent_id", pa.array([self.agent_id] * table.num_rows, pa.string()))


def _presum(deltas: np.ndarray) -> np.ndarray:
    """Merge deltas of the same edge and second (keeps pending buffers proportional to edges, not flows)."""
    if len(deltas) < 2:
        return deltas
    keys = ("second_ns", "client_hi", "client_lo", "server_hi", "server_lo", "server_port", "proto", "vlan",
            "tunnel_id", "interface")  # fmt: skip
    order = np.lexsort([deltas[k] for k in reversed(keys)])
    d = deltas[order]
    same = np.ones(len(d), bool)
    for k in keys:
        same[1:] &= d[k][1:] == d[k][:-1]
    same[0] = False
    starts = np.flatnonzero(~same)
    if len(starts) == len(d):
        return d
    out = d[starts].copy()
    for name in ("packets_c2s", "packets_s2c", "bytes_c2s", "bytes_s2c", "rtt_sum_us", "retrans", "rtt_count",
                 "flows_opened", "flows_closed", "flows_failed"):  # fmt: skip
        out[name] = np.add.reduceat(d[name], starts).astype(out[name].dtype)
    return out


def empty_deltas() -> np.ndarray:
    """No edge deltas."""
    return np.zeros(0, EDGE_DELTA_DTYPE)

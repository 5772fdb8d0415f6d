"""Application requests in the agent: the workers' parser config and the counters they report.

Each :class:`~cloudtap.agent.worker.CaptureWorker` owns a :class:`~cloudtap.l7.RequestParser` when
``requests.enabled`` (docs/requests.md, "In the agent"); this module turns the ``requests`` section into
its :class:`~cloudtap.l7.RequestConfig`, sums the workers' counters for ``/status``, ``/metrics`` and
the heartbeat, and loads the parser's kernels at start (:func:`warm_up_requests`).
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cloudtap.agent.config import AgentConfig
from cloudtap.l7.parser import RequestConfig
from cloudtap.l7.pipeline import with_flow_counts
from cloudtap.schema.request import REQ_STATUS_NAMES

if TYPE_CHECKING:
    from cloudtap.agent.output import RecordOutput
    from cloudtap.agent.worker import CaptureWorker

log = logging.getLogger(__name__)
#: Parser counters that are requests or packets not parsed, not paired or not counted on a flow record.
REQUEST_DROPS = ("table_full", "queue_overflow", "flow_counts_late", "snaplen_cut", "message_limit",
                 "orphan_responses", "gaps")  # fmt: skip


def request_config(config: AgentConfig) -> RequestConfig | None:
    """The workers' parser config from ``config.requests``; None when requests are not parsed.

    Requests are counted on the flow records of ``config.meter`` (its record periods; a flow's counts wait
    for its next record as long as the meter may take to send one: :func:`~cloudtap.l7.pipeline.with_flow_counts`).
    """
    rq = config.requests
    if not rq.enabled:
        return None
    parser = RequestConfig(
        max_flows=rq.max_flows, queue=rq.queue, timeout_s=rq.timeout_s, protocols=tuple(rq.protocols)
    )
    return with_flow_counts(parser, config.meter)


def request_status(workers: Sequence[CaptureWorker], output: RecordOutput) -> dict[str, Any]:
    """The parsers' counters summed over ``workers``, the table capacity, and the records written by status."""
    parsers = [w.requests for w in workers if w.requests is not None]
    if not parsers:
        return {"enabled": False}
    totals: dict[str, Any] = {"enabled": True}
    for parser in parsers:
        for name, value in parser.stats.items():
            totals[name] = totals.get(name, 0) + value
    totals["table_capacity"] = sum(p.config.max_flows for p in parsers)
    totals["flow_records_matched"] = sum(p.flow_records_matched for p in parsers)
    totals["records"] = output.requests_out
    totals["by_status"] = {
        name: int(n) for name, n in zip(REQ_STATUS_NAMES, output.requests_by_status.tolist(), strict=True)
    }
    return totals


def heartbeat_fields(requests: dict[str, Any]) -> dict[str, int]:
    """The heartbeat's request counters from ``AgentStatus.requests`` (empty while requests are off)."""
    if not requests.get("enabled"):
        return {}
    return {
        "requests_parsed": int(requests.get("requests", 0)),
        "request_drops": sum(int(requests.get(k, 0)) for k in REQUEST_DROPS),
        "request_flow_counts_late": int(requests.get("flow_counts_late", 0)),
    }


_CHILD = "from cloudtap.agent.requests import warm_up_requests; warm_up_requests(compile_in_child=False)"


def warm_up_requests(*, compile_in_child: bool = True) -> None:
    """Load the request parser's kernels from numba's cache before the first packet (agent start, requests
    enabled); on a cache miss compile them in a child process first, like :func:`~cloudtap.agent.warmup.warm_up`."""
    from cloudtap.agent import warmup

    if compile_in_child:
        try:
            with warmup._refuse_compiling():
                _run_request_kernels()
            return
        except warmup._CacheMiss:
            done = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, check=False,
                                  timeout=warmup.COMPILE_TIMEOUT_S)  # fmt: skip
            if done.returncode != 0:
                log.warning("compiling the request kernels in a child process failed: compiling here")
    _run_request_kernels()


def _run_request_kernels() -> None:
    """Run every request kernel on one HTTP request: parse, time out, annotate a flow record, expire, release."""
    import time

    import numpy as np

    from cloudtap.capture.frames import FrameBatch
    from cloudtap.decode import decode_frames
    from cloudtap.l7.parser import RequestParser
    from cloudtap.schema.flow import FLOW_DTYPE

    payload = b"GET / HTTP/1.1\r\n\r\n"
    frame = (
        bytes.fromhex(
            "ffffffffffff0200000000010800"  # Ethernet
            f"4500{40 + len(payload):04x}00010000400600000a0000010a000002"  # IPv4 10.0.0.1 -> 10.0.0.2, TCP
            "d431005000000001000000005018ffff00000000"  # TCP PSH/ACK 54321 -> 80
        )
        + payload
    )
    now = time.time_ns()
    batch = FrameBatch(
        data=np.frombuffer(frame, np.uint8).copy(), offset=np.zeros(1, np.int64),
        cap_len=np.array([len(frame)], np.uint32), wire_len=np.array([len(frame)], np.uint32),
        ts_ns=np.array([now], np.int64), linktype=np.ones(1, np.uint16), interface=np.zeros(1, np.uint16),
    )  # fmt: skip
    parser = RequestParser(RequestConfig(max_flows=16, out_rows=512, count_hold_s=1.0, count_period_s=60.0))
    parser.add(batch, decode_frames(batch))
    parser.tick(now + 60 * 10**9)
    parser.annotate_flows(np.zeros(1, FLOW_DTYPE))
    parser.expire_counts()
    parser.flush()
    parser.release_counts()
    parser.records()

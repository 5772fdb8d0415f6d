"""Per-flow pending requests: a ring of ``Q`` ``L7_DTYPE`` rows per flow slot, and emission.

Rows ``slot*Q .. slot*Q+Q-1`` of ``pend`` hold the flow's requests in order (``q_head``, ``q_len``).
A request row is filled when the request is parsed; the response fills its outcome and the row is
copied to the output. Output counters live in ``st`` (see ``_kernels.py``).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from cloudtap._kernel_opts import KERNEL_OPTS
from cloudtap.schema.request import (
    ERROR_BYTES,
    L7_DTYPE,
    REQ_OK,
    REQ_UNANSWERED,
    REQF_TCP,
    TEXT_OFFSETS,
)

ROW_BYTES = L7_DTYPE.itemsize
OFF_TYPE = TEXT_OFFSETS["request_type"]
OFF_RESOURCE = TEXT_OFFSETS["resource"]
OFF_HOST = TEXT_OFFSETS["host"]
OFF_ERROR = TEXT_OFFSETS["error"]

# st[] slots ------------------------------------------------------------------------------------
ST_N_OUT = 0  #: records written to ``out`` since the wrapper last drained it
ST_CLOCK = 1  #: highest packet time seen
ST_NEXT_SCAN = 2  #: packet time of the next timeout scan
ST_FREE_TOP = 3  #: free-stack height
ST_REQUESTS = 4  #: requests parsed
ST_RESPONSES = 5  #: responses paired with a request
ST_ORPHAN_RESPONSES = 6  #: responses with no pending request (request not seen, or already timed out)
ST_QUEUE_OVERFLOW = 7  #: requests emitted early as unanswered because their flow's queue was full
ST_TABLE_FULL = 8  #: packets of a detected flow that found no free slot
ST_RETRANS = 9  #: TCP segments skipped as retransmissions
ST_GAPS = 10  #: TCP sequence gaps (parser resynchronised on the next message start)
ST_TIMEOUTS = 11  #: requests emitted as timed out
ST_SNAPLEN_CUT = 12  #: payload segments cut by the snap length
ST_MSG_LIMIT = 13  #: messages not parsed because one segment held more than the per-segment limit
ST_ACTIVE = 14  #: flows in the table (length of the active list)
ST_FLOW_LATE = 15  #: requests concluded too late for a flow record (after its final record, or never claimed)
ST_PROTO_OFF = 16  #: payload segments of a detected protocol that is not enabled (not parsed)
ST_PERIOD_NS = 17  #: setting, not a counter: the meter's record interval (flow count buckets); 0: one bucket
ST_SIZE = 18
STAT_NAMES = (
    "out", "clock", "next_scan", "free", "requests", "responses", "orphan_responses", "queue_overflow",
    "table_full", "retransmissions", "gaps", "timeouts", "snaplen_cut", "message_limit", "flows",
    "flow_counts_late", "protocol_disabled", "period_ns",
)  # fmt: skip


@njit(**KERNEL_OPTS)
def queue_row(flows: np.ndarray, s: int, k: int, q: int) -> int:
    """Row of ``pend`` of the ``k``-th pending request of slot ``s``."""
    return s * q + (int(flows[s].q_head) + k) % q


@njit(**KERNEL_OPTS)
def emit(
    pend: np.ndarray, pend_raw: np.ndarray, out: np.ndarray, out_raw: np.ndarray, st: np.ndarray,
    r: int, resp_ns: int, status: int,
) -> None:  # fmt: skip
    """Copy pending row ``r`` to the output with its outcome."""
    n = st[ST_N_OUT]
    for j in range(ROW_BYTES):
        out_raw[n, j] = pend_raw[r, j]
    o = out[n]
    o.status = status
    if resp_ns > 0:
        o.resp_ns = resp_ns
        o.latency_us = (resp_ns - o.req_ns) // 1000
    else:
        o.resp_ns = 0
        o.latency_us = -1
        o.code = -1
    st[ST_N_OUT] = n + 1


@njit(**KERNEL_OPTS)
def count(f: np.void, o: np.void, st: np.ndarray) -> None:
    """Count emitted request ``o`` on its flow ``f``, in the bucket of the record period it concluded in
    (answered: its response time; else now). See ``_flows.py``."""
    period_ns = st[ST_PERIOD_NS]
    t = o.resp_ns if o.resp_ns > 0 else st[ST_CLOCK]
    period = t // period_ns if period_ns > 0 else 0
    err = 1 if o.status != REQ_OK else 0
    ans = 1 if o.resp_ns > 0 else 0
    lat = np.uint64(o.latency_us) if ans == 1 and o.latency_us > 0 else np.uint64(0)
    if f.n_req == 0 or period <= f.period:
        if f.n_req == 0:
            f.period = period
        f.n_req += 1
        f.n_err += err
        f.n_ans += ans
        f.lat_sum_us += lat
    else:  # a later period than the first bucket's: the second bucket (later periods merge into it)
        if f.n_req1 == 0 or period > f.period1:
            f.period1 = period
        f.n_req1 += 1
        f.n_err1 += err
        f.n_ans1 += ans
        f.lat_sum_us1 += lat


@njit(**KERNEL_OPTS)
def retire_counts(f: np.void) -> None:
    """The meter has ended flow ``f``'s flow (idle as long as its timeout): its counts wait for that flow's
    final record apart from those of the flow the meter starts next on the same key."""
    f.n_req_old += f.n_req + f.n_req1
    f.n_err_old += f.n_err + f.n_err1
    f.n_ans_old += f.n_ans + f.n_ans1
    f.lat_sum_us_old += f.lat_sum_us + f.lat_sum_us1
    f.n_req = 0
    f.n_err = 0
    f.n_ans = 0
    f.lat_sum_us = 0
    f.n_req1 = 0
    f.n_err1 = 0
    f.n_ans1 = 0
    f.lat_sum_us1 = 0


@njit(**KERNEL_OPTS)
def finish(
    flows: np.ndarray, pend: np.ndarray, pend_raw: np.ndarray, out: np.ndarray, out_raw: np.ndarray,
    st: np.ndarray, s: int, k: int, q: int, resp_ns: int, status: int,
) -> None:  # fmt: skip
    """Emit the ``k``-th pending request of slot ``s``, count it on the flow, close the gap in its queue."""
    f = flows[s]
    emit(pend, pend_raw, out, out_raw, st, queue_row(flows, s, k, q), resp_ns, status)
    if f.closed:  # the meter's final record of this flow has gone
        st[ST_FLOW_LATE] += 1
    else:
        count(f, out[st[ST_N_OUT] - 1], st)
    n = int(f.q_len)
    if k == 0:
        f.q_head = (int(f.q_head) + 1) % q
    else:
        for m in range(k, n - 1):
            dst = queue_row(flows, s, m, q)
            src = queue_row(flows, s, m + 1, q)
            for j in range(ROW_BYTES):
                pend_raw[dst, j] = pend_raw[src, j]
    f.q_len = n - 1


@njit(**KERNEL_OPTS)
def push(
    flows: np.ndarray, pend: np.ndarray, pend_raw: np.ndarray, out: np.ndarray, out_raw: np.ndarray,
    st: np.ndarray, s: int, q: int, ts: int, l7: int,
) -> int:  # fmt: skip
    """Append a new request to slot ``s``'s queue and return its row (client/server filled in).

    A full queue first emits its oldest request as unanswered (counted in ``queue_overflow``).
    """
    f = flows[s]
    if int(f.q_len) == q:
        st[ST_QUEUE_OVERFLOW] += 1
        finish(flows, pend, pend_raw, out, out_raw, st, s, 0, q, 0, REQ_UNANSWERED)
    f.closed = 0  # a request after the meter's final record: the meter has a new flow for it
    r = queue_row(flows, s, int(f.q_len), q)
    f.q_len = int(f.q_len) + 1
    for j in range(ROW_BYTES):
        pend_raw[r, j] = 0
    row = pend[r]
    row.req_ns = ts
    row.code = -1
    row.latency_us = -1
    row.l7_proto = l7
    row.proto = f.proto
    row.interface = f.interface
    if f.proto == 6:
        row.flags = REQF_TCP
    if f.client_dir == 0:
        row.client_hi = f.a_hi
        row.client_lo = f.a_lo
        row.client_port = f.a_port
        row.server_hi = f.b_hi
        row.server_lo = f.b_lo
        row.server_port = f.b_port
    else:
        row.client_hi = f.b_hi
        row.client_lo = f.b_lo
        row.client_port = f.b_port
        row.server_hi = f.a_hi
        row.server_lo = f.a_lo
        row.server_port = f.a_port
    st[ST_REQUESTS] += 1
    return r


@njit(**KERNEL_OPTS)
def set_error(pend_raw: np.ndarray, r: int, data: np.ndarray, start: int, n: int) -> None:
    """Error text of pending row ``r`` from payload bytes."""
    m = min(n, ERROR_BYTES)
    for j in range(m):
        pend_raw[r, OFF_ERROR + j] = data[start + j]
    for j in range(m, ERROR_BYTES):
        pend_raw[r, OFF_ERROR + j] = 0

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
ST_SIZE = 16
STAT_NAMES = (
    "out", "clock", "next_scan", "free", "requests", "responses", "orphan_responses", "queue_overflow",
    "table_full", "retransmissions", "gaps", "timeouts", "snaplen_cut", "message_limit", "flows",
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
def finish(
    flows: np.ndarray, pend: np.ndarray, pend_raw: np.ndarray, out: np.ndarray, out_raw: np.ndarray,
    st: np.ndarray, s: int, k: int, q: int, resp_ns: int, status: int,
) -> None:  # fmt: skip
    """Emit the ``k``-th pending request of slot ``s`` and close the gap in its queue."""
    f = flows[s]
    emit(pend, pend_raw, out, out_raw, st, queue_row(flows, s, k, q), resp_ns, status)
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

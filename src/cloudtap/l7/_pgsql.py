"""PostgreSQL protocol v3: simple Query and extended Parse/Bind/Execute ... Sync, paired with the
server's ReadyForQuery; an ErrorResponse on the way gives the SQLSTATE.

A simple ``Query`` is one request (``Query``); an extended batch (everything up to ``Sync``) is one
request (``Execute``) whose resource is the fingerprint of its Parse (empty when it reuses a named
statement). The startup packet, SSLRequest and authentication are not requests; a server accepting
SSL (``S``) ends parsing of the connection.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from cloudtap._kernel_opts import KERNEL_OPTS
from cloudtap.l7._queue import (
    OFF_RESOURCE,
    OFF_TYPE,
    ST_MSG_LIMIT,
    ST_ORPHAN_RESPONSES,
    ST_RESPONSES,
    finish,
    push,
    queue_row,
    set_error,
)
from cloudtap.l7._sqlstate import sqlstate_status
from cloudtap.l7._text import fingerprint_sql, put_const
from cloudtap.schema.request import L7_PGSQL, REQF_RESOURCE_CUT, REQUEST_TYPE_BYTES, RESOURCE_BYTES

MAX_MESSAGES = 32  #: at most one record per message: within the kernel's output reserve
_QUERY = np.frombuffer(b"Query\x00", np.uint8)
_EXECUTE = np.frombuffer(b"Execute\x00", np.uint8)
#: Frontend message types we accept at a message start: Q P B E D S H C X F d c f p
_FRONTEND = np.frombuffer(b"QPBEDSHCXFdcfp", np.uint8)
#: Backend message types: R S K Z T D C E N I 1 2 3 n s t c d G H W A v
_BACKEND = np.frombuffer(b"RSKZTDCENI123nstcdGHWAv", np.uint8)


@njit(**KERNEL_OPTS)
def be32(data: np.ndarray, pos: int) -> int:
    return (
        (int(data[pos]) << 24) | (int(data[pos + 1]) << 16) | (int(data[pos + 2]) << 8) | int(data[pos + 3])
    )


@njit(**KERNEL_OPTS)
def startup(data: np.ndarray, pos: int, end: int, tot_end: int) -> bool:
    """StartupMessage (v3), SSLRequest or GSSENCRequest: length, then the code."""
    if pos + 8 > end or be32(data, pos) != tot_end - pos:
        return False
    code = be32(data, pos + 4)
    return code == 196608 or code == 80877103 or code == 80877104


@njit(**KERNEL_OPTS)
def _known(t: int, types: np.ndarray) -> bool:
    for k in range(types.shape[0]):
        if t == types[k]:
            return True
    return False


@njit(**KERNEL_OPTS)
def looks_like_query(data: np.ndarray, pos: int, end: int, tot_end: int) -> bool:
    """A frontend ``Q`` or ``P`` message whose length fits the segment, starting with SQL text."""
    if pos + 6 > end or (data[pos] != 81 and data[pos] != 80):
        return False
    ln = be32(data, pos + 1)
    if ln < 5 or pos + 1 + ln > tot_end:
        return False
    if data[pos] == 80:  # Parse: statement name (NUL-terminated), then the query
        p = pos + 5
        while p < end and data[p] != 0:
            p += 1
        c = data[p + 1] if p + 1 < end else 0
    else:
        c = data[pos + 5]
    return (65 <= c <= 90) or (97 <= c <= 122) or c == 40 or c == 32 or c == 10


@njit(**KERNEL_OPTS)
def segment(
    data: np.ndarray, pos: int, end: int, tot_end: int, from_client: bool, ts: int, s: int, q: int,
    flows: np.ndarray, pend: np.ndarray, pend_raw: np.ndarray, out: np.ndarray, out_raw: np.ndarray,
    st: np.ndarray,
) -> int:  # fmt: skip
    """Parse PostgreSQL messages from ``pos``; return the new skip."""
    f = flows[s]
    if from_client and startup(data, pos, end, tot_end):
        return 0
    if not from_client and tot_end - pos == 1 and f.q_len == 0:
        if data[pos] == 83:  # 'S': TLS follows
            f.dead = 1
        return 0
    for _ in range(MAX_MESSAGES):
        if pos >= tot_end:
            return 0
        if pos + 5 > end:
            return -1
        t = int(data[pos])
        ln = be32(data, pos + 1)
        if ln < 4 or ln > 1 << 28 or not _known(t, _FRONTEND if from_client else _BACKEND):
            return -1
        body = pos + 5
        nxt = pos + 1 + ln
        stop = min(nxt, end)
        if from_client:
            if t == 81:  # Query
                f.ext_open = 0
                r = push(flows, pend, pend_raw, out, out_raw, st, s, q, ts, L7_PGSQL)
                put_const(pend_raw, r, OFF_TYPE, REQUEST_TYPE_BYTES, _QUERY)
                if fingerprint_sql(pend_raw, r, OFF_RESOURCE, RESOURCE_BYTES, data, body, stop) or stop < nxt:
                    pend[r].flags |= REQF_RESOURCE_CUT
            elif t == 80 or t == 66 or t == 69:  # Parse, Bind, Execute
                if not f.ext_open or f.q_len == 0:
                    r = push(flows, pend, pend_raw, out, out_raw, st, s, q, ts, L7_PGSQL)
                    put_const(pend_raw, r, OFF_TYPE, REQUEST_TYPE_BYTES, _EXECUTE)
                    f.ext_open = 1
                r = queue_row(flows, s, int(f.q_len) - 1, q)
                if t == 80 and pend_raw[r, OFF_RESOURCE] == 0:
                    p = body
                    while p < stop and data[p] != 0:
                        p += 1
                    if (
                        fingerprint_sql(pend_raw, r, OFF_RESOURCE, RESOURCE_BYTES, data, p + 1, stop)
                        or stop < nxt
                    ):
                        pend[r].flags |= REQF_RESOURCE_CUT
            elif t == 83:  # Sync closes the extended batch
                f.ext_open = 0
        else:
            if f.q_len > 0 and pend[queue_row(flows, s, 0, q)].resp_ns == 0:
                pend[queue_row(flows, s, 0, q)].resp_ns = ts  # timed from the first message of the reply
            if t == 69 and f.q_len > 0:  # ErrorResponse: fields (type byte, NUL-terminated text)
                r = queue_row(flows, s, 0, q)
                p = body
                while p < stop and data[p] != 0:
                    ft = data[p]
                    p += 1
                    v = p
                    while p < stop and data[p] != 0:
                        p += 1
                    if ft == 67 and p - v == 5:  # 'C': SQLSTATE
                        set_error(pend_raw, r, data, v, 5)
                        pend[r].status = sqlstate_status(data, v)
                    p += 1
            elif t == 90:  # ReadyForQuery
                if f.q_len > 0:
                    r = queue_row(flows, s, 0, q)
                    pend[r].code = 0
                    finish(
                        flows,
                        pend,
                        pend_raw,
                        out,
                        out_raw,
                        st,
                        s,
                        0,
                        q,
                        int(pend[r].resp_ns),
                        int(pend[r].status),
                    )
                    st[ST_RESPONSES] += 1
                else:
                    st[ST_ORPHAN_RESPONSES] += 1
        if nxt >= tot_end:
            return nxt - tot_end
        if nxt > end:
            return -1
        pos = nxt
    st[ST_MSG_LIMIT] += 1
    return -1

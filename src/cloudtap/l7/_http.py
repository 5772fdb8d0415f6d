"""HTTP/1.x: request and status lines, Host, Content-Length / chunked, pipelining.

A message whose start line and headers span several TCP segments is parsed from its first segment
(what that segment holds); the parser then waits for the next segment that starts a message.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from cloudtap._kernel_opts import KERNEL_OPTS
from cloudtap.l7._queue import (
    OFF_HOST,
    OFF_RESOURCE,
    OFF_TYPE,
    ST_MSG_LIMIT,
    ST_ORPHAN_RESPONSES,
    ST_RESPONSES,
    finish,
    push,
    queue_row,
)
from cloudtap.l7._text import put_bytes, read_uint
from cloudtap.schema.request import (
    HOST_BYTES,
    L7_HTTP,
    REQ_CLIENT_ERROR,
    REQ_OK,
    REQ_SERVER_ERROR,
    REQF_RESOURCE_CUT,
    REQF_SNAPLEN_CUT,
    REQUEST_TYPE_BYTES,
    RESOURCE_BYTES,
)

#: Most messages parsed from one segment (pipelining); the rest is counted in ``message_limit``.
MAX_MESSAGES = 32
_HOST = np.frombuffer(b"host:", np.uint8)
_CLEN = np.frombuffer(b"content-length:", np.uint8)
_TENC = np.frombuffer(b"transfer-encoding:", np.uint8)


@njit(**KERNEL_OPTS)
def request_line(data: np.ndarray, pos: int, end: int, cut: bool = False) -> tuple:
    """(method length, target end, next line) of a request line at ``pos``; method length 0 if none.

    With ``cut`` (the capture's snap length ended the segment) a line that does not end in the
    captured bytes is accepted when its target starts with ``/``: the target is what was captured.
    """
    m = pos
    while m < end and m - pos < 16 and (65 <= data[m] <= 90 or data[m] == 95 or data[m] == 45):
        m += 1
    if m - pos < 3 or m >= end or data[m] != 32:
        return 0, 0, 0
    t = m + 1
    if t >= end or data[t] == 32 or data[t] < 33:
        return 0, 0, 0
    lf = find_lf(data, t, end)
    if lf < 0:
        if not cut or data[t] != 47:
            return 0, 0, 0
        v = t
        while v < end and data[v] != 32:
            v += 1
        return m - pos, v, end
    eol = lf - 1 if data[lf - 1] == 13 else lf
    # ... SP HTTP/1.x (CR) LF
    v = eol - 9
    if v <= t or data[v] != 32:
        return 0, 0, 0
    if not _is_version(data, v + 1):
        return 0, 0, 0
    return m - pos, v, lf + 1


@njit(**KERNEL_OPTS)
def find_lf(data: np.ndarray, pos: int, end: int) -> int:
    """Position of the next LF at or after ``pos`` before ``end``; -1 when none."""
    while pos < end:
        if data[pos] == 10:
            return pos
        pos += 1
    return -1


@njit(**KERNEL_OPTS)
def _is_version(data: np.ndarray, p: int) -> bool:
    return (
        data[p] == 72
        and data[p + 1] == 84
        and data[p + 2] == 84
        and data[p + 3] == 80
        and data[p + 4] == 47
        and data[p + 5] == 49
        and data[p + 6] == 46
        and 48 <= data[p + 7] <= 57
    )


@njit(**KERNEL_OPTS)
def status_line(data: np.ndarray, pos: int, end: int) -> int:
    """Status code of a status line ``HTTP/1.x NNN`` at ``pos``; -1 if none."""
    if pos + 12 > end or not _is_version(data, pos) or data[pos + 8] != 32:
        return -1
    code, after = read_uint(data, pos + 9, end, 3)
    if (
        code < 100
        or after != pos + 12
        or (after < end and data[after] != 32 and data[after] != 13 and data[after] != 10)
    ):
        return -1
    return code


@njit(**KERNEL_OPTS)
def _header_is(data: np.ndarray, p: int, end: int, name: np.ndarray) -> bool:
    if p + name.shape[0] > end:
        return False
    for j in range(name.shape[0]):
        b = data[p + j]
        if 65 <= b <= 90:
            b += 32
        if b != name[j]:
            return False
    return True


@njit(**KERNEL_OPTS)
def headers(data: np.ndarray, pos: int, end: int, pend_raw: np.ndarray, r: int) -> tuple:
    """Walk header lines from ``pos``: (end of headers or -1, Content-Length or -1, chunked).

    With ``r >= 0`` the Host value goes into that pending row.
    """
    clen = -1
    chunked = False
    while True:
        lf = find_lf(data, pos, end)
        if lf < 0:
            return -1, clen, chunked
        eol = lf - 1 if lf > pos and data[lf - 1] == 13 else lf
        if eol == pos:
            return lf + 1, clen, chunked
        if r >= 0 and _header_is(data, pos, eol, _HOST):
            v = pos + 5
            while v < eol and data[v] == 32:
                v += 1
            put_bytes(pend_raw, r, OFF_HOST, HOST_BYTES, data, v, eol - v)
        elif _header_is(data, pos, eol, _CLEN):
            v = pos + 15
            while v < eol and data[v] == 32:
                v += 1
            clen, _ = read_uint(data, v, eol, 15)
        elif _header_is(data, pos, eol, _TENC):
            for k in range(pos + 18, eol - 6):
                if data[k] == 99 and data[k + 1] == 104 and data[k + 2] == 117 and data[k + 6] == 100:
                    chunked = True
        pos = lf + 1


@njit(**KERNEL_OPTS)
def client_segment(
    data: np.ndarray, pos: int, end: int, tot_end: int, ts: int, s: int, q: int,
    flows: np.ndarray, pend: np.ndarray, pend_raw: np.ndarray, out: np.ndarray, out_raw: np.ndarray,
    st: np.ndarray,
) -> int:  # fmt: skip
    """Parse the requests starting at ``pos``; return the new skip (bytes to come, -1 lost)."""
    for _ in range(MAX_MESSAGES):
        mlen, tend, eol = request_line(data, pos, end, end < tot_end)
        if mlen == 0:
            return -1
        r = push(flows, pend, pend_raw, out, out_raw, st, s, q, ts, L7_HTTP)
        put_bytes(pend_raw, r, OFF_TYPE, REQUEST_TYPE_BYTES, data, pos, mlen)
        if put_bytes(pend_raw, r, OFF_RESOURCE, RESOURCE_BYTES, data, pos + mlen + 1, tend - pos - mlen - 1):
            pend[r].flags |= REQF_RESOURCE_CUT
        if eol >= end:
            pend[r].flags |= REQF_RESOURCE_CUT | REQF_SNAPLEN_CUT
            return -1
        hend, clen, chunked = headers(data, eol, end, pend_raw, r)
        if hend < 0 or chunked:
            return -1
        nxt = hend + max(clen, 0)
        if nxt >= tot_end:
            return nxt - tot_end
        if nxt >= end:
            return -1
        pos = nxt
    st[ST_MSG_LIMIT] += 1
    return -1


@njit(**KERNEL_OPTS)
def server_segment(
    data: np.ndarray, pos: int, end: int, tot_end: int, ts: int, s: int, q: int,
    flows: np.ndarray, pend: np.ndarray, pend_raw: np.ndarray, out: np.ndarray, out_raw: np.ndarray,
    st: np.ndarray,
) -> int:  # fmt: skip
    """Parse the responses starting at ``pos``; pair each final one with the oldest request."""
    for _ in range(MAX_MESSAGES):
        code = status_line(data, pos, end)
        if code < 0:
            return -1
        head = False
        if flows[s].q_len > 0:
            r = queue_row(flows, s, 0, q)
            head = pend_raw[r, OFF_TYPE] == 72 and pend_raw[r, OFF_TYPE + 1] == 69  # HEAD
        hend, clen, chunked = headers(data, pos, end, pend_raw, -1)
        interim = 100 <= code < 200 and code != 101
        if not interim:
            if flows[s].q_len > 0:
                r = queue_row(flows, s, 0, q)
                pend[r].code = code
                status = REQ_SERVER_ERROR if code >= 500 else REQ_CLIENT_ERROR if code >= 400 else REQ_OK
                finish(flows, pend, pend_raw, out, out_raw, st, s, 0, q, ts, status)
                st[ST_RESPONSES] += 1
            else:
                st[ST_ORPHAN_RESPONSES] += 1
        if code == 101:
            flows[s].dead = 1  # switched protocols: no more HTTP on this connection
            return -1
        if hend < 0:
            return -1
        if head or code == 204 or code == 304 or interim:
            nxt = hend
        elif chunked or clen < 0:
            return -1
        else:
            nxt = hend + clen
        if nxt >= tot_end:
            return nxt - tot_end
        if nxt >= end:
            return -1
        pos = nxt
    st[ST_MSG_LIMIT] += 1
    return -1

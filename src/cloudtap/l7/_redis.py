"""Redis RESP2/RESP3: commands as arrays of bulk strings (pipelined), replies paired in order.

The command name (upper-cased) is both the request type and the resource; ``arg_count`` says how
many arguments followed it. Argument values (keys, payloads) are never copied. Error replies
(``-ERR ...``, RESP3 ``!``) give the error word (``ERR``, ``WRONGTYPE``...). RESP3 push messages
(``>``) are out of band and pair with nothing.
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
from cloudtap.l7._text import find_crlf, read_uint
from cloudtap.schema.request import L7_REDIS, REQ_OK, REQ_SERVER_ERROR, REQUEST_TYPE_BYTES, RESOURCE_BYTES

MAX_MESSAGES = 32
_MAX_DEPTH_ELEMENTS = 1 << 20

#: Reply type bytes: + - : $ * _ , # ( ! = % ~ > |
_TYPES = np.frombuffer(b"+-:$*_,#(!=%~>|", np.uint8)


@njit(**KERNEL_OPTS)
def _signed(data: np.ndarray, pos: int, end: int) -> tuple:
    """Signed decimal terminated by CR LF: (value, position after CR LF); position -1 if absent."""
    neg = pos < end and data[pos] == 45
    v, after = read_uint(data, pos + 1 if neg else pos, end, 12)
    if v < 0 or after + 1 >= end or data[after] != 13 or data[after + 1] != 10:
        return 0, -1
    return (-v if neg else v), after + 2


@njit(**KERNEL_OPTS)
def value_end(data: np.ndarray, pos: int, end: int) -> tuple:
    """Walk one RESP value from ``pos``: (state, position after it).

    state 0: complete; 1: ends past ``end`` at exactly the returned position (a bulk cut by the
    segment); 2: continues past ``end`` by an unknown amount; 3: not RESP.
    """
    need = 1
    while need > 0:
        if pos >= end:
            return 2, pos
        t = data[pos]
        if t == 43 or t == 45 or t == 58 or t == 95 or t == 44 or t == 35 or t == 40:  # line types
            eol = find_crlf(data, pos + 1, end)
            if eol < 0:
                return 2, pos
            pos = eol + 2
        elif t == 36 or t == 33 or t == 61:  # $ ! = : length-prefixed
            ln, body = _signed(data, pos + 1, end)
            if body < 0:
                return (2, pos) if end - pos < 16 else (3, pos)
            if ln < 0:
                pos = body
            else:
                pos = body + ln + 2
                if pos > end:
                    return (1, pos) if need == 1 else (2, pos)
        elif t == 42 or t == 37 or t == 126 or t == 62 or t == 124:  # * % ~ > |
            cnt, body = _signed(data, pos + 1, end)
            if body < 0:
                return (2, pos) if end - pos < 16 else (3, pos)
            if cnt > _MAX_DEPTH_ELEMENTS:
                return 3, pos
            if cnt > 0:
                need += cnt * 2 if (t == 37 or t == 124) else cnt
            if t == 124:
                need += 1  # an attribute precedes the value it describes
            pos = body
        else:
            return 3, pos
        need -= 1
    return 0, pos


@njit(**KERNEL_OPTS)
def command_start(data: np.ndarray, pos: int, end: int) -> bool:
    """``*N CRLF $L CRLF`` followed by a letter: the start of a command."""
    if pos + 8 > end or data[pos] != 42:
        return False
    n, p = _signed(data, pos + 1, end)
    if p < 0 or n < 1 or p >= end or data[p] != 36:
        return False
    ln, b = _signed(data, p + 1, end)
    if b < 0 or ln < 1 or ln > 64 or b + ln > end:
        return False  # the command name must be whole in the segment
    c = data[b]
    return (65 <= c <= 90) or (97 <= c <= 122)


@njit(**KERNEL_OPTS)
def segment(
    data: np.ndarray, pos: int, end: int, tot_end: int, from_client: bool, ts: int, s: int, q: int,
    flows: np.ndarray, pend: np.ndarray, pend_raw: np.ndarray, out: np.ndarray, out_raw: np.ndarray,
    st: np.ndarray,
) -> int:  # fmt: skip
    """Parse the commands (client) or replies (server) from ``pos``; return the new skip."""
    for _ in range(MAX_MESSAGES):
        if pos >= end:
            return 0 if pos >= tot_end else -1
        if from_client:
            if not command_start(data, pos, end):
                return -1
            n, p = _signed(data, pos + 1, end)
            ln, b = _signed(data, p + 1, end)
            r = push(flows, pend, pend_raw, out, out_raw, st, s, q, ts, L7_REDIS)
            m = min(ln, REQUEST_TYPE_BYTES, end - b)
            for j in range(m):
                c = data[b + j]
                if 97 <= c <= 122:
                    c -= 32
                pend_raw[r, OFF_TYPE + j] = c
                if j < RESOURCE_BYTES:
                    pend_raw[r, OFF_RESOURCE + j] = c
            pend[r].arg_count = n - 1
        else:
            t = data[pos]
            ok = False
            for k in range(_TYPES.shape[0]):
                ok = ok or t == _TYPES[k]
            if not ok:
                return -1
        state, nxt = value_end(data, pos, end)
        if state == 3:
            return -1
        if not from_client and data[pos] != 62:
            if flows[s].q_len > 0:
                r = queue_row(flows, s, 0, q)
                status = REQ_OK
                if data[pos] == 45 or data[pos] == 33:
                    status = REQ_SERVER_ERROR
                    w = pos + 1
                    if data[pos] == 33:  # !len CRLF text: the word starts after the length line
                        e = find_crlf(data, pos + 1, end)
                        w = e + 2 if e > 0 else end
                    k = w
                    while k < end and data[k] != 32 and data[k] != 13:
                        k += 1
                    set_error(pend_raw, r, data, w, k - w)
                pend[r].code = 0
                finish(flows, pend, pend_raw, out, out_raw, st, s, 0, q, ts, status)
                st[ST_RESPONSES] += 1
            else:
                st[ST_ORPHAN_RESPONSES] += 1
        if state == 2:
            return -1
        if state == 1:
            return nxt - tot_end if nxt >= tot_end else -1
        pos = nxt
    st[ST_MSG_LIMIT] += 1
    return -1

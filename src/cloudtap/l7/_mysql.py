"""MySQL client/server protocol: commands (seq 0) and the first packet of their response (seq 1).

COM_QUERY and COM_STMT_PREPARE carry SQL (fingerprinted); COM_STMT_EXECUTE carries the statement id
(``request_id``; the PREPARE's OK records the id it returned, and an EXECUTE of a statement prepared
on the same connection gets the PREPARE's fingerprint as its resource). OK / EOF / result set are ``ok``;
ERR gives the error number (``code``) and SQLSTATE (``error``). Commands without a response
(COM_QUIT, COM_STMT_CLOSE, COM_STMT_SEND_LONG_DATA) are not requests. Login is not a request.
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
from cloudtap.l7._text import fingerprint_sql, put_bytes, put_const, put_uint
from cloudtap.schema.request import (
    L7_MYSQL,
    REQ_OK,
    REQ_SERVER_ERROR,
    REQF_RESOURCE_CUT,
    REQUEST_TYPE_BYTES,
    RESOURCE_BYTES,
)

MAX_MESSAGES = 8
#: Prepared statements remembered per flow (by id modulo this), so EXECUTE gets its statement's text.
STMT_SLOTS = 4
COM_QUIT = 0x01
COM_INIT_DB = 0x02
COM_QUERY = 0x03
COM_PING = 0x0E
COM_STMT_PREPARE = 0x16
COM_STMT_EXECUTE = 0x17
_NO_RESPONSE = (0x01, 0x18, 0x19)
_QUERY = np.frombuffer(b"QUERY\x00", np.uint8)
_PREPARE = np.frombuffer(b"PREPARE\x00", np.uint8)
_EXECUTE = np.frombuffer(b"EXECUTE\x00", np.uint8)
_INIT_DB = np.frombuffer(b"INIT_DB\x00", np.uint8)
_PING = np.frombuffer(b"PING\x00", np.uint8)
_COM = np.frombuffer(b"COM_\x00", np.uint8)


@njit(**KERNEL_OPTS)
def packet_len(data: np.ndarray, pos: int) -> int:
    return int(data[pos]) | (int(data[pos + 1]) << 8) | (int(data[pos + 2]) << 16)


@njit(**KERNEL_OPTS)
def looks_like_command(data: np.ndarray, pos: int, end: int, tot_end: int) -> bool:
    """A command packet (seq 0) whose length matches the segment: COM_QUERY/PREPARE with text, EXECUTE."""
    if pos + 5 > end or data[pos + 3] != 0:
        return False
    ln = packet_len(data, pos)
    cmd = data[pos + 4]
    if cmd == COM_QUERY or cmd == COM_STMT_PREPARE:
        if ln < 2 or pos + 4 + ln < tot_end:
            return False
        c = data[pos + 5]
        if c == 0 and pos + 7 < end:  # query attributes: parameter count, parameter set count
            c = data[pos + 7]
        return (65 <= c <= 90) or (97 <= c <= 122) or c == 40 or c == 32 or c == 47 or c == 10
    if cmd == COM_STMT_EXECUTE:
        return ln >= 10 and pos + 4 + ln == tot_end
    return False


@njit(**KERNEL_OPTS)
def greeting(data: np.ndarray, pos: int, end: int, tot_end: int) -> bool:
    """The server's initial handshake (protocol 10, version text)."""
    if pos + 10 > end or data[pos + 3] != 0 or data[pos + 4] != 10:
        return False
    if pos + 4 + packet_len(data, pos) != tot_end:
        return False
    c = data[pos + 5]
    return 48 <= c <= 57


@njit(**KERNEL_OPTS)
def segment(
    data: np.ndarray, pos: int, end: int, tot_end: int, from_client: bool, ts: int, s: int, q: int,
    flows: np.ndarray, pend: np.ndarray, pend_raw: np.ndarray, out: np.ndarray, out_raw: np.ndarray,
    st: np.ndarray, stmt_id: np.ndarray, stmt_text: np.ndarray,
) -> int:  # fmt: skip
    """Parse MySQL packets from ``pos``; return the new skip."""
    for _ in range(MAX_MESSAGES):
        if pos + 4 > end:
            return 0 if pos >= tot_end else -1
        ln = packet_len(data, pos)
        seq = data[pos + 3]
        nxt = pos + 4 + ln
        if ln == 0:
            return -1
        if from_client:
            if seq != 0:
                return -1
            cmd = int(data[pos + 4])
            long_text = cmd == COM_QUERY or cmd == COM_STMT_PREPARE
            if cmd > 0x1F or (nxt > tot_end and not long_text) or (nxt < tot_end and cmd not in _NO_RESPONSE):
                return -1  # a command fills its segment (after a QUIT / STMT_CLOSE / SEND_LONG_DATA)
            if cmd not in _NO_RESPONSE:
                r = push(flows, pend, pend_raw, out, out_raw, st, s, q, ts, L7_MYSQL)
                body = pos + 5
                stop = min(nxt, end)
                if cmd == COM_QUERY or cmd == COM_STMT_PREPARE:
                    put_const(
                        pend_raw, r, OFF_TYPE, REQUEST_TYPE_BYTES, _QUERY if cmd == COM_QUERY else _PREPARE
                    )
                    if body + 2 <= stop and data[body] == 0 and data[body + 1] == 1:
                        body += 2  # query attributes: none
                    if (
                        fingerprint_sql(pend_raw, r, OFF_RESOURCE, RESOURCE_BYTES, data, body, stop)
                        or stop < nxt
                    ):
                        pend[r].flags |= REQF_RESOURCE_CUT
                elif cmd == COM_STMT_EXECUTE:
                    put_const(pend_raw, r, OFF_TYPE, REQUEST_TYPE_BYTES, _EXECUTE)
                    if body + 4 <= stop:
                        sid = (
                            int(data[body])
                            | (int(data[body + 1]) << 8)
                            | (int(data[body + 2]) << 16)
                            | (int(data[body + 3]) << 24)
                        )
                        pend[r].request_id = sid
                        k = s * STMT_SLOTS + sid % STMT_SLOTS
                        if stmt_id[k] == sid:  # the statement's text, from its PREPARE
                            put_bytes(
                                pend_raw, r, OFF_RESOURCE, RESOURCE_BYTES, stmt_text[k], 0, RESOURCE_BYTES
                            )
                elif cmd == COM_INIT_DB:
                    put_const(pend_raw, r, OFF_TYPE, REQUEST_TYPE_BYTES, _INIT_DB)
                    put_bytes(pend_raw, r, OFF_RESOURCE, RESOURCE_BYTES, data, body, stop - body)
                elif cmd == COM_PING:
                    put_const(pend_raw, r, OFF_TYPE, REQUEST_TYPE_BYTES, _PING)
                else:
                    put_uint(pend_raw, r, OFF_TYPE, REQUEST_TYPE_BYTES, _COM, cmd)
        else:
            if seq != 1 or flows[s].q_len == 0:
                if seq == 1:
                    st[ST_ORPHAN_RESPONSES] += 1
                return -1
            r = queue_row(flows, s, 0, q)
            first = data[pos + 4]
            status = REQ_OK
            pend[r].code = 0
            if first == 0xFF and pos + 7 <= end:
                code = int(data[pos + 5]) | (int(data[pos + 6]) << 8)
                pend[r].code = code
                if pos + 13 <= end and data[pos + 7] == 35:  # '#' + SQLSTATE
                    set_error(pend_raw, r, data, pos + 8, 5)
                    status = sqlstate_status(data, pos + 8)
                else:
                    status = REQ_SERVER_ERROR
            elif first == 0 and pend_raw[r, OFF_TYPE] == 80 and pos + 9 <= end:  # PREPARE OK: stmt id
                sid = (
                    int(data[pos + 5])
                    | (int(data[pos + 6]) << 8)
                    | (int(data[pos + 7]) << 16)
                    | (int(data[pos + 8]) << 24)
                )
                pend[r].request_id = sid
                k = s * STMT_SLOTS + sid % STMT_SLOTS
                stmt_id[k] = sid
                for j in range(RESOURCE_BYTES):
                    stmt_text[k, j] = pend_raw[r, OFF_RESOURCE + j]
            finish(flows, pend, pend_raw, out, out_raw, st, s, 0, q, ts, status)
            st[ST_RESPONSES] += 1
            if first != 0 and first != 0xFF:
                return -1  # a result set follows: wait for the next command's response
        if nxt >= tot_end:
            return nxt - tot_end
        pos = nxt
    st[ST_MSG_LIMIT] += 1
    return -1

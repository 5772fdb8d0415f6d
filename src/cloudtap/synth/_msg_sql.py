# mypy: disable-error-code="no-untyped-def, assignment, call-overload, untyped-decorator"
"""PostgreSQL and MySQL messages (see :mod:`cloudtap.synth._messages`)."""

from __future__ import annotations

import numpy as np
from numba import njit

from cloudtap._kernel_opts import KERNEL_OPTS
from cloudtap.synth._msg_bytes import (
    T_LEN,
    T_OFF,
    put_be,
    put_le,
    put_template,
    put_text,
    word_end,
)

N_ERRORS = 3

_PG_ROWDESC = np.frombuffer(
    b"T\x00\x00\x00\x1c\x00\x01row\x00"  # one field "row"
    b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x19\xff\xff\xff\xff\xff\xff\x00\x00",  # text, no table
    np.uint8,
)
_PG_READY = np.frombuffer(b"Z\x00\x00\x00\x05I", np.uint8)
_PG_ERR_HEAD = np.frombuffer(b"SERROR\x00VERROR\x00C", np.uint8)
_PG_STATES = (
    np.frombuffer(b"23505\x00Mduplicate key value violates unique constraint", np.uint8),
    np.frombuffer(b"40001\x00Mcould not serialize access due to concurrent update", np.uint8),
    np.frombuffer(b"57014\x00Mcanceling statement due to statement timeout", np.uint8),
)


@njit(**KERNEL_OPTS)
def pgsql_message(head, tail, is_resp, pool, tmpl, t, literal, err, mlen):
    """PostgreSQL: simple Query (padded statement); RowDescription + DataRow (padded value) +
    CommandComplete + ReadyForQuery, or ErrorResponse (padded message) + ReadyForQuery."""
    if not is_resp:
        head[0] = 81  # 'Q'
        put_be(head, 1, mlen - 1, 4)
        o = put_template(head, 5, pool, tmpl, t, literal, 0, tmpl[t, T_LEN])
        tail[0] = 0
        return o, 1, 32
    if err > 0:
        head[0] = 69  # 'E'
        put_be(head, 1, mlen - 1 - 6, 4)
        o = put_text(head, 5, _PG_ERR_HEAD)
        o = put_text(head, o, _PG_STATES[err - 1])
        tail[0] = 0
        tail[1] = 0
        return o, put_text(tail, 2, _PG_READY), 46
    o = put_text(head, 0, _PG_ROWDESC)
    # CommandComplete: the statement's first word and a row count ("INSERT 0 1" for INSERT)
    first_end = word_end(pool, tmpl, t, 0)
    tn = 5
    tn = put_template(tail, tn, pool, tmpl, t, literal, 0, first_end)
    if first_end == 6 and pool[tmpl[t, T_OFF]] == 73:  # INSERT
        tail[tn] = 32
        tail[tn + 1] = 48
        tn += 2
    tail[tn] = 32
    tail[tn + 1] = 49
    tail[tn + 2] = 0
    tn += 3
    tail[0] = 67  # 'C'
    put_be(tail, 1, tn - 1, 4)
    tn = put_text(tail, tn, _PG_READY)
    value = mlen - o - 11 - tn
    head[o] = 68  # 'D'
    put_be(head, o + 1, 4 + 2 + 4 + value, 4)
    put_be(head, o + 5, 1, 2)
    put_be(head, o + 7, value, 4)
    return o + 11, tn, 120


_MY_COLDEF = np.frombuffer(
    b"\x03def\x04shop\x06orders\x06orders\x03row\x03row\x0c\x21\x00\xff\xff\x00\x00\xfd\x00\x00\x00\x00\x00",
    np.uint8,
)
_MY_EOF = np.frombuffer(b"\xfe\x00\x00\x02\x00", np.uint8)
_MY_OK = np.frombuffer(b"\x00\x01\x00\x02\x00\x00\x00", np.uint8)
_MY_ERRS = (
    np.frombuffer(b"\x26\x04#23000Duplicate entry for key 'PRIMARY'", np.uint8),  # 1062
    np.frombuffer(b"\xbd\x04#40001Deadlock found when trying to get lock", np.uint8),  # 1213
    np.frombuffer(b"\xb5\x04#HY000Lock wait timeout exceeded", np.uint8),  # 1205
)


@njit(**KERNEL_OPTS)
def mysql_message(head, tail, is_resp, pool, tmpl, t, literal, err, mlen):
    """MySQL: COM_QUERY (padded statement); a one-column result set (SELECT), an OK packet with a
    padded info text (other statements), or an ERR packet with a padded message."""
    if not is_resp:
        put_le(head, 0, mlen - 4, 3)
        head[3] = 0
        head[4] = 3  # COM_QUERY
        return put_template(head, 5, pool, tmpl, t, literal, 0, tmpl[t, T_LEN]), 0, 32
    if err > 0:
        put_le(head, 0, mlen - 4, 3)
        head[3] = 1
        head[4] = 0xFF
        return put_text(head, 5, _MY_ERRS[err - 1]), 0, 46
    select = pool[tmpl[t, T_OFF]] == 83  # 'S'
    if not select:  # OK, then the info text (to the end of the packet)
        put_le(head, 0, mlen - 4, 3)
        head[3] = 1
        return put_text(head, 4, _MY_OK), 0, 32
    o = put_le(head, 0, 1, 3)
    head[3] = 1
    head[4] = 1  # one column
    o = put_le(head, 5, _MY_COLDEF.shape[0], 3)
    head[o] = 2
    o = put_text(head, o + 1, _MY_COLDEF)
    o = put_le(head, o, 5, 3)
    head[o] = 3
    o = put_text(head, o + 1, _MY_EOF)
    put_le(tail, 0, 5, 3)
    tail[3] = 5
    tn = put_text(tail, 4, _MY_EOF)
    rest = mlen - o - tn - 4  # row packet payload: length-encoded value
    if rest - 1 < 251:
        hdr, value = 1, rest - 1
    elif rest - 3 < 65536:
        hdr, value = 3, rest - 3
    else:
        hdr, value = 4, rest - 4
    o = put_le(head, o, rest, 3)
    head[o] = 4
    o += 1
    if hdr == 1:
        head[o] = value
    elif hdr == 3:
        head[o] = 0xFC
        put_le(head, o + 1, value, 2)
    else:
        head[o] = 0xFD
        put_le(head, o + 1, value, 3)
    return o + hdr, tn, 120

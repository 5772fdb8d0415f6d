"""DNS over UDP (one message per datagram) and TCP (2-byte length prefix, several per segment).

Queries are paired with responses by transaction id within the flow; a query repeating a pending id
(a retransmission) is not counted twice: the response is timed from the first query.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from cloudtap._kernel_opts import KERNEL_OPTS
from cloudtap.l7._queue import (
    OFF_ERROR,
    OFF_RESOURCE,
    OFF_TYPE,
    ST_MSG_LIMIT,
    ST_ORPHAN_RESPONSES,
    ST_RESPONSES,
    finish,
    push,
    queue_row,
)
from cloudtap.l7._text import put_const, put_uint
from cloudtap.schema.request import (
    ERROR_BYTES,
    L7_DNS,
    REQ_CLIENT_ERROR,
    REQ_OK,
    REQ_SERVER_ERROR,
    REQF_RESOURCE_CUT,
    REQUEST_TYPE_BYTES,
    RESOURCE_BYTES,
)

MAX_MESSAGES = 32
DNS_PORTS = (53, 5353, 5355)


def _names(pairs: dict[int, str], rows: int) -> np.ndarray:
    table = np.zeros((rows, 12), np.uint8)
    for code, name in pairs.items():
        table[code, : len(name)] = np.frombuffer(name.encode(), np.uint8)
    return table


_QTYPES = _names(
    {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 11: "WKS", 12: "PTR", 13: "HINFO", 15: "MX", 16: "TXT",
     24: "SIG", 25: "KEY", 28: "AAAA", 29: "LOC", 33: "SRV", 35: "NAPTR", 39: "DNAME", 41: "OPT", 43: "DS",
     44: "SSHFP", 46: "RRSIG", 47: "NSEC", 48: "DNSKEY", 50: "NSEC3", 52: "TLSA", 64: "SVCB", 65: "HTTPS",
     99: "SPF", 249: "TKEY", 250: "TSIG", 251: "IXFR", 252: "AXFR", 255: "ANY", 257: "CAA"},
    258,
)  # fmt: skip
_RCODES = _names(
    {1: "FormErr", 2: "ServFail", 3: "NXDomain", 4: "NotImp", 5: "Refused", 6: "YXDomain", 7: "YXRRSet",
     8: "NXRRSet", 9: "NotAuth", 10: "NotZone", 16: "BADSIG"},
    24,
)  # fmt: skip
_TYPE = np.frombuffer(b"TYPE\x00", np.uint8)
_RCODE = np.frombuffer(b"RCODE\x00", np.uint8)
_ROOT = np.frombuffer(b"<Root>\x00", np.uint8)


@njit(**KERNEL_OPTS)
def question_end(data: np.ndarray, m: int, mend: int, raw: np.ndarray, r: int) -> int:
    """Walk the first question's name (writing it dotted into row ``r`` when ``r >= 0``).

    Returns the position after QTYPE/QCLASS, or -1 when the name is malformed or does not fit.
    """
    pos = m + 12
    n = 0
    cut = False
    jumps = 0
    after = -1
    while True:
        if pos >= mend:
            return -1
        ln = int(data[pos])
        if ln == 0:
            pos += 1
            break
        if ln >= 192:
            if pos + 1 >= mend or jumps == 8:
                return -1
            if after < 0:
                after = pos + 2
            target = m + (((ln & 63) << 8) | int(data[pos + 1]))
            if target >= pos or target < m + 12:
                return -1
            pos = target
            jumps += 1
            continue
        if ln > 63 or pos + 1 + ln > mend:
            return -1
        if r >= 0:
            if n > 0:
                if n < RESOURCE_BYTES:
                    raw[r, OFF_RESOURCE + n] = 46
                    n += 1
                else:
                    cut = True
            for j in range(ln):
                if n < RESOURCE_BYTES:
                    raw[r, OFF_RESOURCE + n] = data[pos + 1 + j]
                    n += 1
                else:
                    cut = True
        pos += 1 + ln
    if after >= 0:
        pos = after
    if pos + 4 > mend:
        return -1
    if r >= 0:
        if n == 0:
            put_const(raw, r, OFF_RESOURCE, RESOURCE_BYTES, _ROOT)
        if cut:
            return -(pos + 4) - 2  # caller decodes: cut flag
    return pos + 4


@njit(**KERNEL_OPTS)
def looks_like_query(data: np.ndarray, m: int, mend: int, strict: bool, scratch: np.ndarray) -> bool:
    """A DNS query at ``m``: header, one question that parses. ``strict`` (no DNS port): a plain
    query with nothing else but an optional OPT record."""
    if mend - m < 17:
        return False
    flags = (int(data[m + 2]) << 8) | int(data[m + 3])
    qd = (int(data[m + 4]) << 8) | int(data[m + 5])
    an = (int(data[m + 6]) << 8) | int(data[m + 7])
    ns = (int(data[m + 8]) << 8) | int(data[m + 9])
    ar = (int(data[m + 10]) << 8) | int(data[m + 11])
    if flags & 0x8000 or qd != 1 or (flags & 0x0040) != 0 or ((flags >> 11) & 15) > 5:
        return False  # a query: one question, Z bit clear, a defined opcode
    if strict and (an != 0 or ns != 0 or ar > 1 or (flags & 0x7870) != 0):
        return False
    if an > 64 or ns > 64 or ar > 64:
        return False
    return question_end(data, m, mend, scratch, -1) > 0


@njit(**KERNEL_OPTS)
def message(
    data: np.ndarray, m: int, mend: int, from_client: bool, ts: int, s: int, q: int,
    flows: np.ndarray, pend: np.ndarray, pend_raw: np.ndarray, out: np.ndarray, out_raw: np.ndarray,
    st: np.ndarray,
) -> None:  # fmt: skip
    """One DNS message ``data[m:mend]``: push a query, or pair a response by id."""
    if mend - m < 12:
        return
    tid = (int(data[m]) << 8) | int(data[m + 1])
    flags = (int(data[m + 2]) << 8) | int(data[m + 3])
    qd = (int(data[m + 4]) << 8) | int(data[m + 5])
    f = flows[s]
    if flags & 0x8000 == 0:
        if not from_client or qd == 0:
            return
        for k in range(int(f.q_len)):
            if pend[queue_row(flows, s, k, q)].request_id == tid:
                return  # retransmitted query: the response is timed from the first one
        if not looks_like_query(data, m, mend, False, pend_raw):
            return
        r = push(flows, pend, pend_raw, out, out_raw, st, s, q, ts, L7_DNS)
        qe = question_end(data, m, mend, pend_raw, r)
        if qe < -1:
            pend[r].flags |= REQF_RESOURCE_CUT
            qe = -(qe + 2)
        qtype = (int(data[qe - 4]) << 8) | int(data[qe - 3])
        if qtype < _QTYPES.shape[0] and _QTYPES[qtype, 0] != 0:
            put_const(pend_raw, r, OFF_TYPE, REQUEST_TYPE_BYTES, _QTYPES[qtype])
        else:
            put_uint(pend_raw, r, OFF_TYPE, REQUEST_TYPE_BYTES, _TYPE, qtype)
        pend[r].request_id = tid
        pend[r].arg_count = qd
        return
    if from_client:
        return
    for k in range(int(f.q_len)):
        r = queue_row(flows, s, k, q)
        if pend[r].request_id == tid:
            rcode = flags & 15
            pend[r].code = rcode
            if rcode != 0:
                if rcode < _RCODES.shape[0] and _RCODES[rcode, 0] != 0:
                    put_const(pend_raw, r, OFF_ERROR, ERROR_BYTES, _RCODES[rcode])
                else:
                    put_uint(pend_raw, r, OFF_ERROR, ERROR_BYTES, _RCODE, rcode)
            status = REQ_OK if rcode == 0 else REQ_CLIENT_ERROR if rcode in (1, 3) else REQ_SERVER_ERROR
            finish(flows, pend, pend_raw, out, out_raw, st, s, k, q, ts, status)
            st[ST_RESPONSES] += 1
            return
    st[ST_ORPHAN_RESPONSES] += 1


@njit(**KERNEL_OPTS)
def tcp_segment(
    data: np.ndarray, pos: int, end: int, tot_end: int, from_client: bool, ts: int, s: int, q: int,
    flows: np.ndarray, pend: np.ndarray, pend_raw: np.ndarray, out: np.ndarray, out_raw: np.ndarray,
    st: np.ndarray,
) -> int:  # fmt: skip
    """Length-prefixed DNS messages from ``pos``; return the new skip."""
    for _ in range(MAX_MESSAGES):
        if pos + 2 > end:
            return -1 if pos < tot_end else 0
        ln = (int(data[pos]) << 8) | int(data[pos + 1])
        if ln < 12:
            return -1
        mend = pos + 2 + ln
        if mend > end:
            if mend <= tot_end or end - pos - 2 >= 12:
                message(data, pos + 2, min(mend, end), from_client, ts, s, q, flows, pend, pend_raw, out,
                        out_raw, st)  # fmt: skip
            return mend - tot_end if mend >= tot_end else -1
        message(data, pos + 2, mend, from_client, ts, s, q, flows, pend, pend_raw, out, out_raw, st)
        if mend == tot_end:
            return 0
        pos = mend
    st[ST_MSG_LIMIT] += 1
    return -1

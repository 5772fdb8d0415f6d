# mypy: disable-error-code="no-untyped-def, assignment, call-overload, untyped-decorator"
"""HTTP/1.1, RESP (Redis) and DNS messages (see :mod:`cloudtap.synth._messages`)."""

from __future__ import annotations

import numpy as np
from numba import njit

from cloudtap._kernel_opts import KERNEL_OPTS
from cloudtap.synth._msg_bytes import (
    T_ARG,
    T_LEN,
    T_OFF,
    digits,
    put_be,
    put_dec,
    put_template,
    put_text,
    word_end,
)

_HTTP11 = np.frombuffer(b" HTTP/1.1\r\nHost: ", np.uint8)
_UA = np.frombuffer(b"\r\nUser-Agent: cloudtap-synth/1.0\r\n", np.uint8)
_COOKIE = np.frombuffer(b"Cookie: sid=", np.uint8)
_ACCEPT = np.frombuffer(b"\r\nAccept: */*\r\n\r\n", np.uint8)
_CTYPE_LEN = np.frombuffer(b"Content-Type: application/json\r\nContent-Length: ", np.uint8)
_BODY_OPEN = np.frombuffer(b'\r\n\r\n{"d":"', np.uint8)
_BODY_CLOSE = np.frombuffer(b'"}', np.uint8)
_STATUS = (
    np.frombuffer(b"HTTP/1.1 200 OK\r\n", np.uint8),
    np.frombuffer(b"HTTP/1.1 404 Not Found\r\n", np.uint8),
    np.frombuffer(b"HTTP/1.1 500 Internal Server Error\r\n", np.uint8),
    np.frombuffer(b"HTTP/1.1 503 Service Unavailable\r\n", np.uint8),
)


@njit(**KERNEL_OPTS)
def http_message(head, tail, is_resp, pool, tmpl, t, literal, err, host_off, host_len, mlen):
    """HTTP/1.1: GET-like requests pad a cookie, others a JSON body; responses pad a JSON body."""
    o = 0
    body = True
    if not is_resp:
        method_end = word_end(pool, tmpl, t, 0)
        o = put_template(head, o, pool, tmpl, t, literal, 0, tmpl[t, T_LEN])
        o = put_text(head, o, _HTTP11)
        for k in range(host_len):
            head[o + k] = pool[host_off + k]
        o = put_text(head, o + host_len, _UA)
        m0 = pool[tmpl[t, T_OFF]]
        body = method_end != 3 or m0 != 71  # not GET
        if not body:
            o = put_text(head, o, _COOKIE)
            return o, put_text(tail, 0, _ACCEPT), 97
    else:
        o = put_text(head, o, _STATUS[err])
    fixed = o + _CTYPE_LEN.shape[0] + 4  # the body starts after the blank line
    clen = 0
    for nd in range(1, 9):
        clen = mlen - fixed - nd
        if clen >= 0 and digits(clen) == nd:
            break
    o = put_text(head, o, _CTYPE_LEN)
    o = put_dec(head, o, max(clen, 0))
    o = put_text(head, o, _BODY_OPEN)
    return o, put_text(tail, 0, _BODY_CLOSE), 120


_REDIS_ERRS = (
    np.frombuffer(b"-ERR max number of clients reached", np.uint8),
    np.frombuffer(b"-WRONGTYPE Operation against a key holding the wrong kind of value", np.uint8),
    np.frombuffer(b"-OOM command not allowed when used memory > 'maxmemory'", np.uint8),
)
_CRLF = np.frombuffer(b"\r\n", np.uint8)


@njit(**KERNEL_OPTS)
def redis_message(head, tail, is_resp, pool, tmpl, t, literal, err, mlen):
    """RESP: an array of bulk strings (the last one padded); a bulk string reply, or an error."""
    tail[0] = 13
    tail[1] = 10
    if is_resp:
        if err > 0:
            return put_text(head, 0, _REDIS_ERRS[err - 1]), 2, 46
        value = 0
        for nd in range(1, 9):
            value = mlen - 1 - nd - 2 - 2
            if value >= 0 and digits(value) == nd:
                break
        head[0] = 36
        o = put_dec(head, 1, value)
        return put_text(head, o, _CRLF), 2, 120
    n = tmpl[t, T_LEN]
    args = 1
    for k in range(n):
        args += pool[tmpl[t, T_OFF] + k] == 32
    head[0] = 42
    o = put_dec(head, 1, args)
    o = put_text(head, o, _CRLF)
    start = 0
    scratch = np.empty(256, np.uint8)
    for a in range(args):
        stop = word_end(pool, tmpl, t, start)
        wl = put_template(scratch, 0, pool, tmpl, t, literal, start, stop)
        wl_total = wl
        if a == args - 1:  # the last argument takes the padding: $<len> CRLF value padding CRLF
            for nd in range(1, 9):
                total = mlen - (o + 1 + 2 + 2) - nd
                if total >= wl and digits(total) == nd:
                    wl_total = total
                    break
        head[o] = 36
        o = put_dec(head, o + 1, wl_total)
        o = put_text(head, o, _CRLF)
        for k in range(wl):
            head[o + k] = scratch[k]
        o += wl
        if a < args - 1:
            o = put_text(head, o, _CRLF)
        start = stop + 1
    return o, 2, 120


_DNS_RCODE = (0, 3, 2, 5)  # ok, NXDomain, ServFail, Refused


@njit(**KERNEL_OPTS)
def dns_message(head, tail, is_resp, pool, tmpl, t, literal, err, ident, mlen):
    """DNS: one question; the response answers A/AAAA (none on error); both end in an EDNS OPT
    record whose Padding option (RFC 7830) takes the rest of ``mlen``."""
    qtype = tmpl[t, T_ARG]
    put_be(head, 0, ident, 2)
    rcode = _DNS_RCODE[err] if is_resp else 0
    put_be(head, 2, (0x8180 | rcode) if is_resp else 0x0100, 2)
    answer = is_resp and err == 0
    put_be(head, 4, 1, 2)
    put_be(head, 6, 1 if answer else 0, 2)
    put_be(head, 8, 0, 2)
    put_be(head, 10, 1, 2)
    name = np.empty(256, np.uint8)
    nl = put_template(name, 0, pool, tmpl, t, literal, word_end(pool, tmpl, t, 0) + 1, tmpl[t, T_LEN])
    o = 12
    lab = 0
    while lab < nl:
        e = lab
        while e < nl and name[e] != 46:
            e += 1
        head[o] = e - lab
        for k in range(lab, e):
            head[o + 1 + k - lab] = name[k]
        o += 1 + e - lab
        lab = e + 1
    head[o] = 0
    o = put_be(head, o + 1, qtype, 2)
    o = put_be(head, o, 1, 2)
    if answer:
        o = put_be(head, o, 0xC00C, 2)
        o = put_be(head, o, qtype, 2)
        o = put_be(head, o, 1, 2)
        o = put_be(head, o, 300, 4)
        rdlen = 16 if qtype == 28 else 4
        o = put_be(head, o, rdlen, 2)
        for k in range(rdlen):
            head[o + k] = 0
        head[o] = 10 if rdlen == 4 else 0xFD
        o = put_be(head, o + rdlen - 3, literal, 3)
    pad = mlen - o - 15
    head[o] = 0  # OPT: root name, type 41, UDP size 1232, no extended flags
    o = put_be(head, o + 1, 41, 2)
    o = put_be(head, o, 1232, 2)
    o = put_be(head, o, 0, 4)
    o = put_be(head, o, 4 + pad, 2)
    o = put_be(head, o, 12, 2)  # Padding option
    o = put_be(head, o, pad, 2)
    return o, 0, 0

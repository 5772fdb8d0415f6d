# mypy: disable-error-code="no-untyped-def, assignment, call-overload, untyped-decorator"
"""Numba builders of application messages: each request or response as head + padding + tail.

A message of ``mlen`` bytes is ``head`` (the protocol's start: request line, statement, headers,
row header...), ``mlen - hlen - tlen`` padding bytes inside a field whose length the head declares
(a cookie, a JSON body, a column value, trailing statement whitespace, an EDNS padding option) and
``tail`` (what ends the message: ReadyForQuery, CRLF, closing quotes). Lengths inside the head are
computed from ``mlen``, so every message is valid at any size from the service's minimum up.

What varies per exchange comes from :func:`exchange_choice`: a hash of (seed, session, exchange)
picks the template, the literal that replaces its ``\\x01`` marker, and the error variant (0: none).
The Python twin of these choices (truth, minimum sizes, error table) is :mod:`cloudtap.synth.apps`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from cloudtap._kernel_opts import KERNEL_OPTS
from cloudtap.synth._msg_bytes import LITERAL, T_ARG, T_LEN, T_OFF
from cloudtap.synth._msg_sql import N_ERRORS, mysql_message, pgsql_message
from cloudtap.synth._msg_text import dns_message, http_message, redis_message

__all__ = [
    "LITERAL",
    "N_ERRORS",
    "T_ARG",
    "T_LEN",
    "T_OFF",
    "exchange_choice",
    "exchange_choices",
    "message_parts",
]

APP_HTTP, APP_DNS, APP_MYSQL, APP_PGSQL, APP_REDIS = 1, 2, 3, 4, 5
#: Columns of the per-service application table.
S_APP, S_FIRST, S_COUNT, S_HOST_OFF, S_HOST_LEN = 0, 1, 2, 3, 4
HEAD_BYTES = 1024
TAIL_BYTES = 64


@njit(**KERNEL_OPTS)
def _mix(x):
    """splitmix64 finaliser (uint64 arithmetic)."""
    x = np.uint64(x)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@njit(**KERNEL_OPTS)
def exchange_choice(seed, sess, xid, first, count, error_share):
    """(template row, literal 1..99999, error variant 0..N_ERRORS, 16-bit id) of one exchange."""
    h = _mix(np.uint64(seed) ^ (np.uint64(sess) * np.uint64(0x9E3779B97F4A7C15)) ^ np.uint64(xid << 40))
    g = _mix(h ^ np.uint64(0xD1B54A32D192ED03))
    tmpl = first + int(h % np.uint64(max(count, 1)))
    literal = 1 + int((h >> np.uint64(24)) % np.uint64(99999))
    err = 0
    if float(g >> np.uint64(11)) / 9007199254740992.0 < error_share:
        err = 1 + int((g & np.uint64(0xFFFF)) % np.uint64(N_ERRORS))
    return tmpl, literal, err, int((g >> np.uint64(16)) & np.uint64(0xFFFF))


@njit(**KERNEL_OPTS)
def exchange_choices(seed, sess, xid, svc, svc_app, params_err, tmpl_out, literal_out, err_out, id_out):
    """:func:`exchange_choice` for many exchanges (the truth table's view of the same choices)."""
    for i in range(sess.shape[0]):
        p = svc[i]
        t, lit, e, ident = exchange_choice(
            seed, sess[i], xid[i], svc_app[p, S_FIRST], svc_app[p, S_COUNT], params_err[p]
        )
        tmpl_out[i], literal_out[i], err_out[i], id_out[i] = t, lit, e, ident


@njit(**KERNEL_OPTS)
def message_parts(head, tail, app, is_resp, pool, tmpl, svc_row, t, literal, err, ident, mlen):
    """Build one message's head and tail; return (head length, tail length, padding byte)."""
    if app == APP_HTTP:
        return http_message(
            head, tail, is_resp, pool, tmpl, t, literal, err, svc_row[S_HOST_OFF], svc_row[S_HOST_LEN], mlen
        )
    if app == APP_PGSQL:
        return pgsql_message(head, tail, is_resp, pool, tmpl, t, literal, err, mlen)
    if app == APP_MYSQL:
        return mysql_message(head, tail, is_resp, pool, tmpl, t, literal, err, mlen)
    if app == APP_REDIS:
        return redis_message(head, tail, is_resp, pool, tmpl, t, literal, err, mlen)
    if app == APP_DNS:
        return dns_message(head, tail, is_resp, pool, tmpl, t, literal, err, ident, mlen)
    return 0, 0, 0

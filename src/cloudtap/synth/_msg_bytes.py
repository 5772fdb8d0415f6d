# mypy: disable-error-code="no-untyped-def, assignment, call-overload, untyped-decorator"
"""Byte helpers of the message builders: constants, decimal and big/little-endian numbers, templates."""

from __future__ import annotations

from numba import njit

from cloudtap._kernel_opts import KERNEL_OPTS

LITERAL = 1  #: template byte replaced by the exchange's literal number
#: Columns of the template table: offset and length in the byte pool, protocol argument (DNS qtype).
T_OFF, T_LEN, T_ARG = 0, 1, 2


@njit(**KERNEL_OPTS)
def put_text(b, o, s):
    """Copy a constant byte array into ``b`` at ``o``; return the new offset."""
    for k in range(s.shape[0]):
        b[o + k] = s[k]
    return o + s.shape[0]


@njit(**KERNEL_OPTS)
def digits(v):
    n = 1
    while v >= 10:
        v //= 10
        n += 1
    return n


@njit(**KERNEL_OPTS)
def put_dec(b, o, v):
    """Write ``v`` in decimal; return the new offset."""
    n = digits(v)
    for k in range(n - 1, -1, -1):
        b[o + k] = 48 + v % 10
        v //= 10
    return o + n


@njit(**KERNEL_OPTS)
def put_template(b, o, pool, tmpl, t, literal, lo, hi):
    """Copy bytes ``lo..hi`` of template ``t`` (the literal marker becomes the number)."""
    base = tmpl[t, T_OFF]
    for k in range(lo, hi):
        c = pool[base + k]
        if c == LITERAL:
            o = put_dec(b, o, literal)
        else:
            b[o] = c
            o += 1
    return o


@njit(**KERNEL_OPTS)
def word_end(pool, tmpl, t, start):
    """Index (in template ``t``) of the first space at or after ``start``, or its length."""
    base, n = tmpl[t, T_OFF], tmpl[t, T_LEN]
    k = start
    while k < n and pool[base + k] != 32:
        k += 1
    return k


@njit(**KERNEL_OPTS)
def put_be(b, o, v, n):
    for k in range(n):
        b[o + k] = (v >> (8 * (n - 1 - k))) & 0xFF
    return o + n


@njit(**KERNEL_OPTS)
def put_le(b, o, v, n):
    for k in range(n):
        b[o + k] = (v >> (8 * k)) & 0xFF
    return o + n

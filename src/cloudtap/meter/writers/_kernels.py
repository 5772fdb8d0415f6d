"""Numba formatters of flow-record text: addresses, decimal integers, floats (rows: ``_rows.py``).

Every formatter writes ASCII bytes into a preallocated ``uint8`` buffer at ``pos`` and returns the
new position. Strings are passed Arrow-style: one data buffer and ``int64`` offsets per column.

Floats follow Python's ``repr`` (shortest round-trip digits, fixed notation in [1e-4, 1e16)). The
fast path proves each result exact: ``n / 10**d`` with ``n < 2**53`` and ``d <= 17`` is correctly
rounded in IEEE arithmetic, so ``float(n) / 10**d == x`` means the text ``n·10^-d`` parses back
to ``x``; the smallest such ``d`` gives the shortest text. Values it cannot prove (tiny, huge,
NaN, inf) are flagged by :func:`_rows.floats_needing_python` and rendered by Python's ``json``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from cloudtap._kernel_opts import NO_ALLOC_OPTS

_V4_MASK = np.uint64(0xFFFF_FFFF_0000_0000)
_V4_MAPPED = np.uint64(0x0000_FFFF_0000_0000)
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8).copy()
_POW10F = np.array([10.0**i for i in range(18)], dtype=np.float64)
_POW10I = np.array([10**i for i in range(18)], dtype=np.int64)
_TWO53 = float(2**53)
_POW10U = np.array([10**i for i in range(20)], dtype=np.uint64)
_DIGITS2 = np.frombuffer("".join(f"{i:02d}" for i in range(100)).encode(), dtype=np.uint8).copy()


@njit(**NO_ALLOC_OPTS)
def _put_uint(out: np.ndarray, pos: int, v: np.uint64) -> int:
    """Decimal digits of ``v``, two at a time."""
    n = 1
    while n < 20 and v >= _POW10U[n]:
        n += 1
    i = pos + n
    while v >= 100:
        r = np.int64(v % np.uint64(100))
        v //= np.uint64(100)
        i -= 2
        out[i] = _DIGITS2[2 * r]
        out[i + 1] = _DIGITS2[2 * r + 1]
    if v >= 10:
        out[i - 2] = _DIGITS2[2 * np.int64(v)]
        out[i - 1] = _DIGITS2[2 * np.int64(v) + 1]
    else:
        out[i - 1] = 48 + np.uint8(v)
    return pos + n


@njit(**NO_ALLOC_OPTS)
def _put_int(out: np.ndarray, pos: int, v: np.int64) -> int:
    """Decimal digits of ``v`` with a leading ``-`` when negative."""
    if v < 0:
        out[pos] = 45
        return _put_uint(out, pos + 1, np.uint64(-(v + 1)) + np.uint64(1))
    return _put_uint(out, pos, np.uint64(v))


@njit(**NO_ALLOC_OPTS)
def _put_float(out: np.ndarray, pos: int, x: float) -> int:
    """``repr(x)`` when provable (see module doc), else -1 and nothing meaningful written."""
    if x == 0.0:
        if math.copysign(1.0, x) < 0:
            out[pos] = 45
            pos += 1
        out[pos] = 48
        out[pos + 1] = 46
        out[pos + 2] = 48
        return pos + 3
    if not math.isfinite(x):
        return -1
    a = abs(x)
    if a < 1e-4 or a >= 1e16:
        return -1
    for d in range(18):
        p = _POW10F[d]
        m = a * p
        if m >= _TWO53:
            return -1
        n0 = np.int64(math.floor(m + 0.5))
        best = -1
        dist = math.inf
        for n in range(n0 - 1, n0 + 2):
            if n >= 0 and float(n) / p == a and abs(float(n) - m) < dist:
                best = n
                dist = abs(float(n) - m)
        if best < 0:
            continue
        if x < 0:
            out[pos] = 45
            pos += 1
        pos = _put_uint(out, pos, np.uint64(best // _POW10I[d]))
        out[pos] = 46
        pos += 1
        if d == 0:
            out[pos] = 48
            return pos + 1
        frac = best % _POW10I[d]
        for k in range(d - 1, -1, -1):
            out[pos + k] = 48 + np.uint8(frac % 10)
            frac //= 10
        return pos + d
    return -1


@njit(**NO_ALLOC_OPTS)
def _group(hi: np.uint64, lo: np.uint64, k: int) -> np.int64:
    """16-bit group ``k`` (0..7) of the address (hi, lo)."""
    half = hi if k < 4 else lo
    return np.int64((half >> np.uint64(48 - 16 * (k % 4))) & np.uint64(0xFFFF))


@njit(**NO_ALLOC_OPTS)
def _put_address(out: np.ndarray, pos: int, hi: np.uint64, lo: np.uint64) -> int:
    """Dotted quad for IPv4-mapped (hi, lo), else RFC 5952 text as Python's ``ipaddress`` writes it."""
    if hi == 0 and (lo & _V4_MASK) == _V4_MAPPED:
        for k in range(3, -1, -1):
            pos = _put_uint(out, pos, (lo >> np.uint64(8 * k)) & np.uint64(0xFF))
            if k:
                out[pos] = 46
                pos += 1
        return pos
    best_start, best_len, run_start, run_len = -1, 0, -1, 0
    for k in range(8):  # the first longest run of zero groups
        if _group(hi, lo, k) == 0:
            if run_start < 0:
                run_start = k
            run_len += 1
            if run_len > best_len:
                best_start, best_len = run_start, run_len
        else:
            run_start, run_len = -1, 0
    if best_len < 2:
        best_start = -1
    k = 0
    while k < 8:
        if k == best_start:
            out[pos] = 58
            out[pos + 1] = 58
            pos += 2
            k += best_len
            continue
        if k > 0 and k != best_start + best_len:
            out[pos] = 58
            pos += 1
        g = _group(hi, lo, k)
        shift = 12
        while shift > 0 and (g >> shift) == 0:
            shift -= 4
        while shift >= 0:
            out[pos] = _HEX[(g >> shift) & 0xF]
            pos += 1
            shift -= 4
        k += 1
    return pos


@njit(**NO_ALLOC_OPTS)
def format_addresses(hi: np.ndarray, lo: np.ndarray, out: np.ndarray, offsets: np.ndarray) -> int:
    """Text of each (hi, lo) address into ``out`` (39 bytes a row suffice), ``offsets`` (n + 1) filled;
    returns the bytes used. Allocates nothing: a kernel that allocates makes numba import its array
    implementation (~0.1 s) when the kernel is loaded from the cache."""
    pos = 0
    offsets[0] = 0
    for i in range(hi.shape[0]):
        pos = _put_address(out, pos, hi[i], lo[i])
        offsets[i + 1] = pos
    return pos

"""Numba formatters of flow-record text: addresses, decimal integers, floats, JSON lines.

Every formatter writes ASCII bytes into a preallocated ``uint8`` buffer at ``pos`` and returns the
new position. Strings are passed Arrow-style: one data buffer and ``int64`` offsets per column.

Floats follow Python's ``repr`` (shortest round-trip digits, fixed notation in [1e-4, 1e16)). The
fast path proves each result exact: ``n / 10**d`` with ``n < 2**53`` and ``d <= 17`` is correctly
rounded in IEEE arithmetic, so ``float(n) / 10**d == x`` means the text ``n·10^-d`` parses back
to ``x``; the smallest such ``d`` gives the shortest text. Values it cannot prove (tiny, huge,
NaN, inf) are flagged by :func:`float_fallback` and rendered by Python's own ``json`` encoder.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from cloudtap._kernel_opts import KERNEL_OPTS

_V4_MASK = np.uint64(0xFFFF_FFFF_0000_0000)
_V4_MAPPED = np.uint64(0x0000_FFFF_0000_0000)
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8).copy()
_POW10F = np.array([10.0**i for i in range(18)], dtype=np.float64)
_POW10I = np.array([10**i for i in range(18)], dtype=np.int64)
_TWO53 = float(2**53)
_POW10U = np.array([10**i for i in range(20)], dtype=np.uint64)
_DIGITS2 = np.frombuffer("".join(f"{i:02d}" for i in range(100)).encode(), dtype=np.uint8).copy()

#: Output column kinds understood by :func:`jsonl_rows`.
KIND_UINT, KIND_INT, KIND_FLOAT, KIND_STR = 0, 1, 2, 3
#: Upper bounds of one formatted value, bytes.
INT_MAX_CHARS, FLOAT_MAX_CHARS = 20, 24


@njit(**KERNEL_OPTS)
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


@njit(**KERNEL_OPTS)
def _put_int(out: np.ndarray, pos: int, v: np.int64) -> int:
    """Decimal digits of ``v`` with a leading ``-`` when negative."""
    if v < 0:
        out[pos] = 45
        return _put_uint(out, pos + 1, np.uint64(-(v + 1)) + np.uint64(1))
    return _put_uint(out, pos, np.uint64(v))


@njit(**KERNEL_OPTS)
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


@njit(**KERNEL_OPTS)
def _put_address(out: np.ndarray, pos: int, hi: np.uint64, lo: np.uint64) -> int:
    """Dotted quad for IPv4-mapped (hi, lo), else RFC 5952 text as Python's ``ipaddress`` writes it."""
    if hi == 0 and (lo & _V4_MASK) == _V4_MAPPED:
        for k in range(3, -1, -1):
            pos = _put_uint(out, pos, (lo >> np.uint64(8 * k)) & np.uint64(0xFF))
            if k:
                out[pos] = 46
                pos += 1
        return pos
    groups = np.empty(8, dtype=np.int64)
    for k in range(4):
        groups[k] = np.int64((hi >> np.uint64(48 - 16 * k)) & np.uint64(0xFFFF))
        groups[4 + k] = np.int64((lo >> np.uint64(48 - 16 * k)) & np.uint64(0xFFFF))
    best_start, best_len, run_start, run_len = -1, 0, -1, 0
    for k in range(8):  # the first longest run of zero groups
        if groups[k] == 0:
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
        g = groups[k]
        shift = 12
        while shift > 0 and (g >> shift) == 0:
            shift -= 4
        while shift >= 0:
            out[pos] = _HEX[(g >> shift) & 0xF]
            pos += 1
            shift -= 4
        k += 1
    return pos


@njit(**KERNEL_OPTS)
def format_addresses(hi: np.ndarray, lo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Text of each (hi, lo) address: (data bytes, ``int64`` offsets of length n + 1)."""
    n = hi.shape[0]
    out = np.empty(n * 39, dtype=np.uint8)
    offsets = np.empty(n + 1, dtype=np.int64)
    pos = 0
    offsets[0] = 0
    for i in range(n):
        pos = _put_address(out, pos, hi[i], lo[i])
        offsets[i + 1] = pos
    return out[:pos], offsets


@njit(**KERNEL_OPTS)
def float_fallback(values: np.ndarray) -> np.ndarray:
    """True where :func:`_put_float` cannot prove ``repr`` (a 2-D float64 array in, bools out)."""
    scratch = np.empty(64, dtype=np.uint8)
    bad = np.zeros(values.shape, dtype=np.bool_)
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            bad[i, j] = _put_float(scratch, 0, values[i, j]) < 0
    return bad


@njit(**KERNEL_OPTS)
def jsonl_rows(
    start: int,
    stop: int,
    kinds: np.ndarray,
    slots: np.ndarray,
    keys: np.ndarray,
    key_offsets: np.ndarray,
    uints: np.ndarray,
    ints: np.ndarray,
    floats: np.ndarray,
    overrides: np.ndarray,
    override_data: np.ndarray,
    override_offsets: np.ndarray,
    str_data: np.ndarray,
    str_offsets: np.ndarray,
    out: np.ndarray,
) -> int:
    """Rows ``start:stop`` as JSON lines into ``out``; returns the bytes written.

    Column ``c`` is written as ``keys[key_offsets[c]:key_offsets[c+1]]`` (``{"name":`` or
    ``,"name":``) then the value of kind ``kinds[c]`` from column ``slots[c]`` of ``uints``,
    ``ints``, ``floats`` (``overrides[i, s] >= 0`` picks pre-rendered text) or the strings.
    """
    pos = 0
    for i in range(start, stop):
        for c in range(kinds.shape[0]):
            for b in range(key_offsets[c], key_offsets[c + 1]):
                out[pos] = keys[b]
                pos += 1
            s = slots[c]
            kind = kinds[c]
            if kind == KIND_UINT:
                pos = _put_uint(out, pos, uints[i, s])
            elif kind == KIND_INT:
                pos = _put_int(out, pos, ints[i, s])
            elif kind == KIND_FLOAT:
                o = overrides[i, s]
                if o >= 0:
                    for b in range(override_offsets[o], override_offsets[o + 1]):
                        out[pos] = override_data[b]
                        pos += 1
                else:
                    pos = _put_float(out, pos, floats[i, s])
            else:
                out[pos] = 34
                pos += 1
                for b in range(str_offsets[s, i], str_offsets[s, i + 1]):
                    out[pos] = str_data[b]
                    pos += 1
                out[pos] = 34
                pos += 1
        out[pos] = 125
        out[pos + 1] = 10
        pos += 2
    return pos

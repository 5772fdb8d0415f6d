"""Numba kernel writing records as text rows (JSON lines or CSV) straight from the record bytes.

Integer columns are read in place from the structured records through typed views of their bytes
(``FLOW_DTYPE`` is aligned, so a field of ``s`` bytes at offset ``o`` is element
``i * itemsize / s + o / s`` of the ``s``-byte view); no column is copied first. Floats come from a
small matrix (only the float columns), strings Arrow-style (one buffer, offsets per column).

Float text has two styles: ``FLOAT_REPR`` is Python's ``repr`` (what ``json.dumps`` writes:
``1.0``, fixed notation in [1e-4, 1e16)), ``FLOAT_ARROW`` is Arrow's CSV formatter (``1``, fixed
notation for decimal exponents -6..9). Both use the shortest round-trip digits (see
:func:`cloudtap.meter.writers._kernels._put_float` for why the kernel's digits are exact); values
outside the range proven here are pre-rendered by the library that defines the text.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from cloudtap._kernel_opts import NO_ALLOC_OPTS
from cloudtap.meter.writers._kernels import _put_float, _put_int, _put_uint

#: Column kinds understood by :func:`text_rows`.
KIND_UINT, KIND_INT, KIND_FLOAT, KIND_STR = 0, 1, 2, 3
#: Float styles (see module doc).
FLOAT_REPR, FLOAT_ARROW = 0, 1
#: Upper bounds of one formatted value, bytes.
INT_MAX_CHARS, FLOAT_MAX_CHARS = 20, 24
#: Arrow writes fixed notation below this magnitude (decimal exponent <= 9); the kernel proves
#: Arrow's text only in [1e-4, ARROW_FIXED_BELOW).
ARROW_FIXED_BELOW = 1e9


@njit(**NO_ALLOC_OPTS)
def _put_float_style(out: np.ndarray, pos: int, x: float, style: int) -> int:
    """``x`` in ``style``; -1 when the kernel cannot prove the text (rendered by Python instead)."""
    if style == FLOAT_REPR:
        return _put_float(out, pos, x)
    if x == 0.0:
        if math.copysign(1.0, x) < 0:
            out[pos] = 45
            pos += 1
        out[pos] = 48
        return pos + 1
    if not math.isfinite(x) or abs(x) >= ARROW_FIXED_BELOW:
        return -1
    end = _put_float(out, pos, x)
    if end < 0:
        return -1
    if end - pos >= 2 and out[end - 1] == 48 and out[end - 2] == 46:  # repr's "1.0": Arrow writes "1"
        return end - 2
    return end


@njit(**NO_ALLOC_OPTS)
def floats_needing_python(values: np.ndarray, style: int, scratch: np.ndarray, bad: np.ndarray) -> int:
    """Set ``bad`` where :func:`_put_float_style` cannot prove the text of ``values`` (both 2-D);
    ``scratch``: 64 bytes. Returns how many. (Kernels here allocate nothing, see ``_kernels``.)"""
    count = 0
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            bad[i, j] = _put_float_style(scratch, 0, values[i, j], style) < 0
            count += bad[i, j]
    return count


@njit(**NO_ALLOC_OPTS)
def _read_uint(
    u8: np.ndarray, u4: np.ndarray, u2: np.ndarray, u1: np.ndarray, size: int, at: int
) -> np.uint64:
    if size == 8:
        return u8[at]
    if size == 4:
        return np.uint64(u4[at])
    if size == 2:
        return np.uint64(u2[at])
    return np.uint64(u1[at])


@njit(**NO_ALLOC_OPTS)
def _signed(v: np.uint64, size: int) -> np.int64:
    """The two's-complement value of the low ``size`` bytes of ``v``."""
    x = np.int64(v)
    if size < 8:
        bits = 8 * size
        if x >= (np.int64(1) << (bits - 1)):
            x -= np.int64(1) << bits
    return x


@njit(**NO_ALLOC_OPTS)
def text_rows(
    start: int,
    stop: int,
    u8: np.ndarray,
    u4: np.ndarray,
    u2: np.ndarray,
    u1: np.ndarray,
    kinds: np.ndarray,
    sizes: np.ndarray,
    strides: np.ndarray,
    bases: np.ndarray,
    prefix: np.ndarray,
    prefix_offsets: np.ndarray,
    row_end: np.ndarray,
    floats: np.ndarray,
    float_style: int,
    overrides: np.ndarray,
    override_data: np.ndarray,
    override_offsets: np.ndarray,
    str_data: np.ndarray,
    str_offsets: np.ndarray,
    out: np.ndarray,
) -> int:
    """Rows ``start:stop`` as text into ``out``; returns the bytes written.

    Column ``c`` is ``prefix[prefix_offsets[c]:prefix_offsets[c+1]]`` (``{"name":``, ``,`` ...)
    then its value; every row ends with ``row_end``. Integer column ``c`` of ``sizes[c]`` bytes is
    element ``i * strides[c] + bases[c]`` of the view of that size; float and string columns use
    ``bases[c]`` as their column in ``floats`` (``overrides[i, s] >= 0``: pre-rendered text) or in
    ``str_offsets``.
    """
    pos = 0
    for i in range(start, stop):
        for c in range(kinds.shape[0]):
            for b in range(prefix_offsets[c], prefix_offsets[c + 1]):
                out[pos] = prefix[b]
                pos += 1
            kind = kinds[c]
            s = bases[c]
            if kind == KIND_UINT:
                pos = _put_uint(out, pos, _read_uint(u8, u4, u2, u1, sizes[c], i * strides[c] + s))
            elif kind == KIND_INT:
                v = _read_uint(u8, u4, u2, u1, sizes[c], i * strides[c] + s)
                pos = _put_int(out, pos, _signed(v, sizes[c]))
            elif kind == KIND_FLOAT:
                o = overrides[i, s]
                if o >= 0:
                    for b in range(override_offsets[o], override_offsets[o + 1]):
                        out[pos] = override_data[b]
                        pos += 1
                else:
                    pos = _put_float_style(out, pos, floats[i, s], float_style)
            else:
                out[pos] = 34
                pos += 1
                for b in range(str_offsets[s, i], str_offsets[s, i + 1]):
                    out[pos] = str_data[b]
                    pos += 1
                out[pos] = 34
                pos += 1
        for b in range(row_end.shape[0]):
            out[pos] = row_end[b]
            pos += 1
    return pos

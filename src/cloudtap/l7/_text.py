"""Byte-level text helpers shared by the protocol kernels: copying into fixed-width fields, numbers,
and the SQL fingerprint (literals to ``?``, whitespace collapsed)."""

from __future__ import annotations

import numpy as np
from numba import njit

from cloudtap._kernel_opts import KERNEL_OPTS

SPACE = 32
QMARK = 63


@njit(**KERNEL_OPTS)
def put_bytes(raw: np.ndarray, row: int, off: int, width: int, data: np.ndarray, start: int, n: int) -> bool:
    """Copy ``n`` bytes of ``data`` from ``start`` into a NUL-padded field; True when cut."""
    m = min(n, width)
    for j in range(m):
        raw[row, off + j] = data[start + j]
    for j in range(m, width):
        raw[row, off + j] = 0
    return n > width


@njit(**KERNEL_OPTS)
def put_const(raw: np.ndarray, row: int, off: int, width: int, text: np.ndarray) -> None:
    """Copy a constant byte string (NUL-terminated or full) into a field."""
    n = 0
    while n < text.shape[0] and text[n] != 0:
        n += 1
    put_bytes(raw, row, off, width, text, 0, n)


@njit(**KERNEL_OPTS)
def put_uint(raw: np.ndarray, row: int, off: int, width: int, prefix: np.ndarray, value: int) -> None:
    """Write ``prefix`` followed by ``value`` in decimal (``TYPE65534``)."""
    put_const(raw, row, off, width, prefix)
    n = 0
    while n < prefix.shape[0] and prefix[n] != 0:
        n += 1
    digits = np.zeros(20, np.uint8)
    k = 0
    v = value
    while True:
        digits[k] = 48 + v % 10
        k += 1
        v //= 10
        if v == 0:
            break
    for j in range(k):
        if n + j < width:
            raw[row, off + n + j] = digits[k - 1 - j]


@njit(**KERNEL_OPTS)
def read_uint(data: np.ndarray, pos: int, end: int, max_digits: int) -> tuple[int, int]:
    """Decimal digits at ``pos``: (value, position after them); value -1 when none or too many."""
    v = 0
    k = 0
    while pos < end and 48 <= data[pos] <= 57:
        if k == max_digits:
            return -1, pos
        v = v * 10 + int(data[pos] - 48)
        pos += 1
        k += 1
    if k == 0:
        return -1, pos
    return v, pos


@njit(**KERNEL_OPTS)
def find_crlf(data: np.ndarray, pos: int, end: int) -> int:
    """Position of the next CR LF at or after ``pos`` before ``end``; -1 when none."""
    while pos + 1 < end:
        if data[pos] == 13 and data[pos + 1] == 10:
            return pos
        pos += 1
    return -1


@njit(**KERNEL_OPTS)
def _is_word(b: int) -> bool:
    return (48 <= b <= 57) or (65 <= b <= 90) or (97 <= b <= 122) or b == 95 or b == 36 or b >= 128


@njit(**KERNEL_OPTS)
def fingerprint_sql(
    raw: np.ndarray, row: int, off: int, width: int, data: np.ndarray, start: int, end: int
) -> bool:
    """Write the fingerprint of the SQL text ``data[start:end]``; True when cut.

    Quoted strings ('...', "...", with doubled or backslash-escaped quotes) and numbers that are not
    part of an identifier become ``?``; runs of whitespace become one space; leading and trailing
    whitespace and a trailing ``;`` are dropped. Identifiers quoted with backticks are kept.
    """
    n = 0
    cut = False
    pos = start
    pending_space = False
    prev = 0
    while pos < end:
        b = data[pos]
        if b == 0:
            break
        emit = -1
        if b == 32 or b == 9 or b == 10 or b == 13:
            pending_space = n > 0
            prev = SPACE  # a number after whitespace is a literal (``LIMIT 20``), not part of a name
            pos += 1
            continue
        if b == 39 or b == 34:  # 'string' or "string"
            q = b
            pos += 1
            while pos < end:
                c = data[pos]
                if c == 92 and pos + 1 < end:
                    pos += 2
                    continue
                if c == q:
                    if pos + 1 < end and data[pos + 1] == q:
                        pos += 2
                        continue
                    break
                pos += 1
            pos += 1
            emit = QMARK
        elif 48 <= b <= 57 and not _is_word(prev):
            while pos < end and (_is_word(data[pos]) or data[pos] == 46):
                pos += 1
            emit = QMARK
        else:
            pos += 1
            emit = b
        if pending_space:
            if n < width:
                raw[row, off + n] = SPACE
                n += 1
            else:
                cut = True
            pending_space = False
        if n < width:
            raw[row, off + n] = emit
            n += 1
        else:
            cut = True
        prev = emit
    if n > 0 and raw[row, off + n - 1] == 59:  # trailing ';'
        n -= 1
    for j in range(n, width):
        raw[row, off + j] = 0
    return cut

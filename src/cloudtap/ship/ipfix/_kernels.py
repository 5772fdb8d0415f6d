"""Numba encoder of IPFIX messages: flow records into a preallocated buffer, message after message.

One call fills ``out`` with as many whole messages as fit (each at most ``mtu`` bytes), records in
input order; a message holds an IPv4 and/or IPv6 data set (a new set opens whenever the family
changes) and, when due, the template set first. Field order and lengths follow
:mod:`cloudtap.ship.ipfix.elements` (the tests decode the output with those templates).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from cloudtap._kernel_opts import KERNEL_OPTS
from cloudtap.ship.ipfix.elements import (
    FLOW_END_REASON,
    IPFIX_VERSION,
    MESSAGE_HEADER_LEN,
    RECORD_LEN_V4,
    RECORD_LEN_V6,
    SET_HEADER_LEN,
    TEMPLATE_V4,
    TEMPLATE_V6,
)

_END_REASON = np.array(FLOW_END_REASON, dtype=np.uint8)
_MS = np.int64(1_000_000)
_U32 = np.uint64(0xFFFF_FFFF)


@njit(**KERNEL_OPTS)
def _put(out: np.ndarray, pos: int, v: np.uint64, n: int) -> int:
    """``v`` big-endian in ``n`` bytes."""
    for k in range(n - 1, -1, -1):
        out[pos + k] = np.uint8(v & np.uint64(0xFF))
        v >>= np.uint64(8)
    return pos + n


@njit(**KERNEL_OPTS)
def _ms(ns: np.int64) -> np.uint64:
    """Milliseconds since the epoch, rounded down (negative times: 0)."""
    return np.uint64(ns // _MS) if ns > 0 else np.uint64(0)


@njit(**KERNEL_OPTS)
def _record(flows: np.ndarray, i: int, v6: bool, out: np.ndarray, pos: int, bits: np.ndarray) -> int:
    """Data record of flow ``i`` at ``pos``; returns the position after it."""
    f = flows[i]
    pos = _put(out, pos, _ms(f.first_ns), 8)
    pos = _put(out, pos, _ms(f.last_ns), 8)
    pos = _put(out, pos, np.uint64(f.bytes_c2s), 8)
    pos = _put(out, pos, np.uint64(f.packets_c2s), 8)
    pos = _put(out, pos, np.uint64(f.bytes_s2c), 8)
    pos = _put(out, pos, np.uint64(f.packets_s2c), 8)
    pos = _put(out, pos, np.uint64(f.l2_bytes_c2s), 8)
    pos = _put(out, pos, np.uint64(f.l2_bytes_s2c), 8)
    if v6:
        pos = _put(out, pos, np.uint64(f.client_hi), 8)
        pos = _put(out, pos, np.uint64(f.client_lo), 8)
        pos = _put(out, pos, np.uint64(f.server_hi), 8)
        pos = _put(out, pos, np.uint64(f.server_lo), 8)
    else:
        pos = _put(out, pos, np.uint64(f.client_lo) & _U32, 4)
        pos = _put(out, pos, np.uint64(f.server_lo) & _U32, 4)
    pos = _put(out, pos, np.uint64(f.interface), 4)
    pos = _put(out, pos, np.uint64(f.client_port), 2)
    pos = _put(out, pos, np.uint64(f.server_port), 2)
    pos = _put(out, pos, np.uint64(f.vlan), 2)
    pos = _put(out, pos, np.uint64(f.tcp_flags_c2s), 2)
    pos = _put(out, pos, np.uint64(f.tcp_flags_s2c), 2)
    out[pos] = f.proto
    close = np.int64(f.close_type)
    out[pos + 1] = _END_REASON[close] if close < _END_REASON.shape[0] else np.uint8(0)
    pos += 2
    pos = _put(out, pos, np.uint64(f.flow_id), 8)
    pos = _put(out, pos, np.uint64(f.start_ns) if f.start_ns > 0 else np.uint64(0), 8)
    floats = bits.view(np.float64)
    floats[0] = f.rtt_client_us
    floats[1] = f.rtt_server_us
    pos = _put(out, pos, bits[0], 8)
    pos = _put(out, pos, bits[1], 8)
    pos = _put(out, pos, np.uint64(f.retrans_c2s), 4)
    pos = _put(out, pos, np.uint64(f.retrans_s2c), 4)
    pos = _put(out, pos, np.uint64(f.zero_window_c2s), 4)
    pos = _put(out, pos, np.uint64(f.zero_window_s2c), 4)
    pos = _put(out, pos, np.uint64(f.ooo_c2s), 4)
    pos = _put(out, pos, np.uint64(f.ooo_s2c), 4)
    pos = _put(out, pos, np.uint64(f.syn_count), 2)
    pos = _put(out, pos, np.uint64(f.synack_count), 2)
    pos = _put(out, pos, np.uint64(f.record_seq), 2)
    out[pos] = f.close_type
    out[pos + 1] = f.side_rule
    return pos + 2


@njit(**KERNEL_OPTS)
def encode_messages(
    flows: np.ndarray,
    first: int,
    templates: np.ndarray,
    refresh_every: int,
    since_templates: int,
    force_templates: bool,
    mtu: int,
    export_time_s: int,
    sequence: int,
    domain_id: int,
    out: np.ndarray,
    offsets: np.ndarray,
    counts: np.ndarray,
) -> tuple[int, int, int, int, int]:
    """Messages from ``flows[first:]`` into ``out``; message ``m`` is ``out[offsets[m]:offsets[m+1]]``
    and carries ``counts[m]`` data records.

    Templates go first in a message when ``force_templates`` (first message only) or when
    ``refresh_every`` > 0 messages went out without them. ``sequence`` is the count of data records
    sent before (RFC 7011 §3.1). Stops when ``offsets`` or ``out`` has no room for another message.

    Returns (next record index, messages written, next sequence, messages since templates, messages
    that carry the templates).
    """
    n = flows.shape[0]
    bits = np.zeros(2, dtype=np.uint64)
    i = first
    m = 0
    pos = 0
    templated = 0
    offsets[0] = 0
    while i < n and m + 1 < offsets.shape[0] and pos + mtu <= out.shape[0]:
        start = pos
        pos += MESSAGE_HEADER_LEN
        if force_templates or (refresh_every > 0 and since_templates >= refresh_every):
            for b in range(templates.shape[0]):
                out[pos + b] = templates[b]
            pos += templates.shape[0]
            force_templates = False
            since_templates = 0
            templated += 1
        records = 0
        family = 0
        set_start = -1
        while i < n:
            v6 = flows[i].ip_ver == 6
            fam = 6 if v6 else 4
            need = (RECORD_LEN_V6 if v6 else RECORD_LEN_V4) + (SET_HEADER_LEN if fam != family else 0)
            if pos - start + need > mtu:
                break
            if fam != family:
                if set_start >= 0:
                    _put(out, set_start + 2, np.uint64(pos - set_start), 2)
                set_start = pos
                _put(out, pos, np.uint64(TEMPLATE_V6 if v6 else TEMPLATE_V4), 2)
                pos += SET_HEADER_LEN
                family = fam
            pos = _record(flows, i, v6, out, pos, bits)
            records += 1
            i += 1
        if set_start >= 0:
            _put(out, set_start + 2, np.uint64(pos - set_start), 2)
        _put(out, start, np.uint64(IPFIX_VERSION), 2)
        _put(out, start + 2, np.uint64(pos - start), 2)
        _put(out, start + 4, np.uint64(export_time_s), 4)
        _put(out, start + 8, np.uint64(sequence) & _U32, 4)
        _put(out, start + 12, np.uint64(domain_id), 4)
        sequence += records
        since_templates += 1
        counts[m] = records
        m += 1
        offsets[m] = pos
        if records == 0:  # mtu too small for one record: the wrapper refuses such an mtu
            break
    return i, m, sequence, since_templates, templated

# mypy: disable-error-code="no-untyped-def, assignment"
"""Numba kernels of the broker: frame copies (VLAN strip, truncation, encapsulation header) in one buffer.

Every copy is written contiguously into ``out``: the encapsulation header the sender must supply (the
outer IP and, for VXLAN, UDP headers are the kernel's: raw IP / UDP sockets), then the frame. Layouts are
in docs/broker.md.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from cloudtap._kernel_opts import KERNEL_OPTS, NO_ALLOC_OPTS

RAW = 0
VXLAN = 1
GRE = 2
ERSPAN2 = 3
ERSPAN3 = 4

#: Encapsulation header bytes this module writes, by kind (GRE: without / with key).
HEADER_BYTES = {RAW: 0, VXLAN: 8, GRE: 4, ERSPAN2: 16, ERSPAN3: 20}
GRE_KEY_BYTES = 4

_LEAF = NO_ALLOC_OPTS


@njit(**_LEAF)
def _put16(out, p, v):
    out[p] = (v >> 8) & 0xFF
    out[p + 1] = v & 0xFF


@njit(**_LEAF)
def _put32(out, p, v):
    out[p] = (v >> 24) & 0xFF
    out[p + 1] = (v >> 16) & 0xFF
    out[p + 2] = (v >> 8) & 0xFF
    out[p + 3] = v & 0xFF


@njit(**_LEAF)
def _is_tag(data, p):
    t = (np.int64(data[p]) << 8) | np.int64(data[p + 1])
    return t == 0x8100 or t == 0x88A8 or t == 0x9100


@njit(**KERNEL_OPTS)
def build_copies(
    data, offset, cap_len, wire_len, ts_ns,
    copy_frame, copy_dest, copy_limit, copy_strip,
    kind, vni, key, session, max_inner, seq,
    out, out_off, out_len, mtu_cut,
):  # fmt: skip
    """Write every copy into ``out``.

    Args:
        data, offset, cap_len, wire_len, ts_ns: the frames (Ethernet).
        copy_frame: ``int64[m]`` frame of each copy; copy_dest: ``int32[m]`` its destination index.
        copy_limit: ``int32[m]`` rule truncation (0 = whole frame); copy_strip: ``bool[m]`` remove VLAN tags.
        kind, vni, key, session, max_inner: per destination (``key`` < 0: no GRE key; ``max_inner``: the
            longest frame that fits the underlay MTU after the encapsulation).
        seq: ``uint32[k]`` per destination GRE sequence number, advanced per copy (ERSPAN).
        out: ``uint8`` buffer large enough for every copy (frame bytes + 20 per copy).
        out_off, out_len: outputs, the bytes of each copy in ``out``; mtu_cut: output, True where the
            MTU (not the rule) shortened the copy.

    Returns:
        Bytes written into ``out``.
    """
    size = data.shape[0]
    pos = np.int64(0)
    for i in range(copy_frame.shape[0]):
        f = copy_frame[i]
        d = copy_dest[i]
        start = offset[f]
        n = np.int64(cap_len[f])
        if start + n > size:
            n = size - start if size > start else 0
        # VLAN strip: keep the MACs, skip stacked tags
        skip = np.int64(0)
        if copy_strip[i] and n >= 14:
            p = start + 12
            while p + 4 < start + n and _is_tag(data, p):
                p += 4
                skip += 4
        frame_len = n - skip
        keep = frame_len
        limit = np.int64(copy_limit[i])
        if limit > 0 and keep > limit:
            keep = limit
        cut = False
        if keep > max_inner[d]:
            keep = max_inner[d]
            cut = True
        if keep < 0:
            keep = 0
        mtu_cut[i] = cut
        truncated = keep < np.int64(wire_len[f]) - skip
        out_off[i] = pos
        k = kind[d]
        q = pos
        if k == VXLAN:
            out[q] = 0x08
            out[q + 1] = 0
            out[q + 2] = 0
            out[q + 3] = 0
            _put32(out, q + 4, np.int64(vni[d]) << 8)
            q += 8
        elif k == GRE:
            if key[d] >= 0:
                _put16(out, q, 0x2000)
                _put16(out, q + 2, 0x6558)
                _put32(out, q + 4, key[d])
                q += 8
            else:
                _put16(out, q, 0)
                _put16(out, q + 2, 0x6558)
                q += 4
        elif k == ERSPAN2 or k == ERSPAN3:
            _put16(out, q, 0x1000)  # S: a sequence number follows
            _put16(out, q + 2, 0x88BE if k == ERSPAN2 else 0x22EB)
            _put32(out, q + 4, np.int64(seq[d]))
            seq[d] += np.uint32(1)
            q += 8
            vlan = np.int64(0)
            tagged = keep >= 16 and _is_tag(data, start + 12)
            if tagged:
                vlan = ((np.int64(data[start + 14]) << 8) | np.int64(data[start + 15])) & 0xFFF
            sid = np.int64(session[d]) & 0x3FF
            tbit = np.int64(0x400) if truncated else np.int64(0)
            if k == ERSPAN2:
                _put16(out, q, (1 << 12) | vlan)
                en = np.int64(3 << 11) if tagged else np.int64(0)  # 3: VLAN tag preserved in the frame
                _put16(out, q + 2, en | tbit | sid)
                _put32(out, q + 4, 0)  # reserved + index 0
                q += 8
            else:
                _put16(out, q, (2 << 12) | vlan)
                _put16(out, q + 2, tbit | sid)  # COS 0, BSO 0
                _put32(out, q + 4, (ts_ns[f] // 100_000) & 0xFFFFFFFF)  # Gra 00: 100 us units
                _put16(out, q + 8, 0)  # SGT
                _put16(out, q + 10, 0x8000)  # P=1 (Ethernet), FT 0, HW ID 0, D 0, Gra 0, O 0
                q += 12
        # the frame: MACs, then everything after the skipped tags
        if skip > 0:
            head = 12 if keep > 12 else keep
            out[q : q + head] = data[start : start + head]
            rest = keep - head
            src = start + 12 + skip
            out[q + head : q + head + rest] = data[src : src + rest]
        else:
            out[q : q + keep] = data[start : start + keep]
        q += keep
        out_len[i] = np.int32(q - pos)
        pos = q
    return pos


@njit(**KERNEL_OPTS)
def frame_macs(data, offset, cap_len, linktype, index, dst, src):
    """Destination and source MAC (as integers) of the Ethernet frames ``index``; 0 for other frames."""
    size = data.shape[0]
    for i in range(index.shape[0]):
        f = index[i]
        p = offset[f]
        if linktype[f] != 1 or cap_len[f] < 12 or p + 12 > size:
            dst[i] = 0
            src[i] = 0
            continue
        d = np.uint64(0)
        s = np.uint64(0)
        for j in range(6):
            d = (d << np.uint64(8)) | np.uint64(data[p + j])
            s = (s << np.uint64(8)) | np.uint64(data[p + 6 + j])
        dst[i] = d
        src[i] = s


@njit(**_LEAF)
def gso_groups(offset, length, max_segments, max_bytes, start, segments, size, total):
    """Group copies for UDP segmentation offload: a run of equal lengths, then at most one shorter.

    Copies must lie back to back in the buffer (``offset[i+1] == offset[i] + length[i]``); a gap ends a
    group. Writes per group its first copy, number of copies, segment size and bytes; returns the groups.
    """
    n = offset.shape[0]
    g = 0
    i = 0
    while i < n:
        seg = length[i]
        j = i + 1
        used = np.int64(seg)
        while j < n and j - i < max_segments and offset[j] == offset[j - 1] + length[j - 1]:
            ln = length[j]
            if ln > seg or used + ln > max_bytes:
                break
            used += ln
            j += 1
            if ln < seg:
                break
        start[g] = i
        segments[g] = j - i
        size[g] = seg
        total[g] = used
        g += 1
        i = j
    return g

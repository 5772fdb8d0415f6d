# mypy: disable-error-code="no-untyped-def, assignment, call-overload, untyped-decorator"
"""Numba kernels that turn planned packets into pcap records: headers, tunnels, checksums.

Frames are built in a small scratch area (headers only), checksummed there, then copied into
the output buffer up to the capture length. Sessions without an application protocol carry a
constant fill byte, whose share of the TCP/UDP/ICMP checksum is computed arithmetically; the
others carry their slice of a protocol message (:mod:`cloudtap.synth._messages`), built whole in a
second scratch area and summed there, so checksums stay right when the snap length truncates.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from cloudtap._kernel_opts import KERNEL_OPTS
from cloudtap.synth._messages import HEAD_BYTES, S_COUNT, S_FIRST, TAIL_BYTES, exchange_choice, message_parts

_ENC_VXLAN = 1
_ENC_GRE_TEB = 2
_ENC_ERSPAN2 = 3
_VXLAN_PORT = 4789
_TTL = 64


@njit(**KERNEL_OPTS)
def frame_lengths(plan, wire, snaplen, ip_len, wire_len, cap_len):
    """Fill the innermost IP length, the frame length and the captured length of every packet."""
    for i in range(plan.shape[0]):
        p = plan[i]
        w = wire[p.sess]
        if p.proto == 6:
            l4 = 32 if (p.flags & 0x02) else 20
        else:
            l4 = 8
        il = 20 + l4 + p.plen
        l2 = 18 if w.vlan > 0 else 14
        enc = w.encap
        outer = 0
        if enc == _ENC_GRE_TEB:
            outer = 42
        elif enc != 0:
            outer = 50
        wl = outer + l2 + il
        ip_len[i] = il
        wire_len[i] = wl
        cap_len[i] = min(wl, snaplen)


@njit(**KERNEL_OPTS)
def _put16(b, o, v):
    b[o] = (v >> 8) & 0xFF
    b[o + 1] = v & 0xFF


@njit(**KERNEL_OPTS)
def _put32(b, o, v):
    b[o] = (v >> 24) & 0xFF
    b[o + 1] = (v >> 16) & 0xFF
    b[o + 2] = (v >> 8) & 0xFF
    b[o + 3] = v & 0xFF


@njit(**KERNEL_OPTS)
def _put32le(b, o, v):
    b[o] = v & 0xFF
    b[o + 1] = (v >> 8) & 0xFF
    b[o + 2] = (v >> 16) & 0xFF
    b[o + 3] = (v >> 24) & 0xFF


@njit(**KERNEL_OPTS)
def _put_mac(b, o, v):
    for k in range(6):
        b[o + k] = (v >> (40 - 8 * k)) & 0xFF


@njit(**KERNEL_OPTS)
def _sum16(b, o, n):
    s = 0
    for k in range(0, n - 1, 2):
        s += (np.int64(b[o + k]) << 8) | np.int64(b[o + k + 1])
    if n & 1:
        s += np.int64(b[o + n - 1]) << 8
    return s


@njit(**KERNEL_OPTS)
def _fold(s):
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


@njit(**KERNEL_OPTS)
def _ipv4(b, o, total, ident, df, proto, src, dst):
    b[o] = 0x45
    b[o + 1] = 0
    _put16(b, o + 2, total)
    _put16(b, o + 4, ident)
    _put16(b, o + 6, 0x4000 if df else 0)
    b[o + 8] = _TTL
    b[o + 9] = proto
    _put16(b, o + 10, 0)
    _put32(b, o + 12, src)
    _put32(b, o + 16, dst)
    _put16(b, o + 10, (~_fold(_sum16(b, o, 20))) & 0xFFFF)


@njit(**KERNEL_OPTS)
def assemble(
    buf,
    rec_off,
    plan,
    wire,
    ip_len,
    wire_len,
    cap_len,
    ts_div,
    mss,
    fill,
    collector_ip,
    collector_mac,
    host_ipid,
    host_seq,
    pool,
    tmpl,
    svc_app,
    err_share,
    seed,
):
    """Write one pcap record (16-byte header + captured bytes) per planned packet.

    Args:
        buf: uint8 output; record ``i`` starts at ``rec_off[i]``.
        rec_off: int64 record offsets.
        plan: PLAN_DTYPE rows, in file order.
        wire: WIRE_DTYPE table indexed by ``plan.sess``.
        ip_len, wire_len, cap_len: from :func:`frame_lengths`.
        ts_div: 1 for nanosecond, 1000 for microsecond timestamps.
        mss: MSS advertised in SYN options.
        fill: payload byte.
        collector_ip, collector_mac: ERSPAN destination.
        host_ipid, host_seq: int64 per-host counters (outer IP id, GRE sequence), updated in place.
        pool, tmpl, svc_app, err_share, seed: application payloads (:class:`cloudtap.synth.apps.AppTables`,
            each service's error share, the payload seed).
    """
    scratch = np.zeros(192, np.uint8)
    head = np.zeros(HEAD_BYTES, np.uint8)
    tail = np.zeros(TAIL_BYTES, np.uint8)
    seg = np.zeros(1 << 16, np.uint8)
    fill_word = np.int64(fill) * 257
    for i in range(plan.shape[0]):
        p = plan[i]
        w = wire[p.sess]
        o = rec_off[i]
        ts = p.ts
        sec = ts // 1_000_000_000
        frac = (ts - sec * 1_000_000_000) // ts_div
        cap = np.int64(cap_len[i])
        _put32le(buf, o, sec)
        _put32le(buf, o + 4, frac)
        _put32le(buf, o + 8, cap)
        _put32le(buf, o + 12, np.int64(wire_len[i]))
        o += 16
        if p.dir == 0:
            sip, dip, smac, dmac = np.int64(w.cip), np.int64(w.sip), np.int64(w.cmac), np.int64(w.smac)
            sp, dp = np.int64(w.cport), np.int64(w.sport)
            oh, oip_s, oip_d = w.chost, np.int64(w.chost_ip), np.int64(w.shost_ip)
            omac_s, omac_d = np.int64(w.chost_mac), np.int64(w.shost_mac)
        else:
            sip, dip, smac, dmac = np.int64(w.sip), np.int64(w.cip), np.int64(w.smac), np.int64(w.cmac)
            sp, dp = np.int64(w.sport), np.int64(w.cport)
            oh, oip_s, oip_d = w.shost, np.int64(w.shost_ip), np.int64(w.chost_ip)
            omac_s, omac_d = np.int64(w.shost_mac), np.int64(w.chost_mac)
        vlan = np.int64(w.vlan)
        il = np.int64(ip_len[i])
        inner = il + (18 if vlan > 0 else 14)
        enc = w.encap
        h = 0
        if enc != 0:
            if enc == _ENC_ERSPAN2:
                oip_d = collector_ip
                omac_d = collector_mac
            _put_mac(scratch, 0, omac_d)
            _put_mac(scratch, 6, omac_s)
            _put16(scratch, 12, 0x0800)
            if enc == _ENC_VXLAN:
                oproto, otot = 17, 36 + inner
            elif enc == _ENC_GRE_TEB:
                oproto, otot = 47, 28 + inner
            else:
                oproto, otot = 47, 36 + inner
            _ipv4(scratch, 14, otot, host_ipid[oh] & 0xFFFF, True, oproto, oip_s, oip_d)
            host_ipid[oh] += 1
            h = 34
            if enc == _ENC_VXLAN:
                usp = 49152 + (((np.int64(p.sess) * 2654435761) >> 9) + np.int64(p.dir) * 7919) % 16384
                _put16(scratch, h, usp)
                _put16(scratch, h + 2, _VXLAN_PORT)
                _put16(scratch, h + 4, 16 + inner)
                _put16(scratch, h + 6, 0)
                _put32(scratch, h + 8, 0x08000000)
                _put32(scratch, h + 12, np.int64(w.tunnel_id) << 8)
                h += 16
            elif enc == _ENC_GRE_TEB:
                _put16(scratch, h, 0x2000)
                _put16(scratch, h + 2, 0x6558)
                _put32(scratch, h + 4, np.int64(w.tunnel_id))
                h += 8
            else:
                _put16(scratch, h, 0x1000)
                _put16(scratch, h + 2, 0x88BE)
                _put32(scratch, h + 4, host_seq[oh] & 0xFFFFFFFF)
                host_seq[oh] += 1
                _put16(scratch, h + 8, (1 << 12) | (vlan & 0xFFF))
                en = 3 if vlan > 0 else 0
                _put16(scratch, h + 10, (en << 11) | (np.int64(w.tunnel_id) & 0x3FF))
                _put32(scratch, h + 12, 0)
                h += 16
        _put_mac(scratch, h, dmac)
        _put_mac(scratch, h + 6, smac)
        h += 12
        if vlan > 0:
            _put16(scratch, h, 0x8100)
            _put16(scratch, h + 2, vlan)
            h += 4
        _put16(scratch, h, 0x0800)
        h += 2
        proto = np.int64(p.proto)
        _ipv4(scratch, h, il, np.int64(p.ipid), proto == 6, proto, sip, dip)
        h += 20
        plen = np.int64(p.plen)
        real = w.app > 0 and p.mlen > 0 and plen > 0
        if real:
            sv = w.svc
            t, lit, err, ident = exchange_choice(
                seed, p.sess, p.xid, svc_app[sv, S_FIRST], svc_app[sv, S_COUNT], err_share[sv]
            )
            hl, tl, pad = message_parts(
                head, tail, w.app, p.dir == 1, pool, tmpl, svc_app[sv], t, lit, err, ident, np.int64(p.mlen)
            )
            _slice(seg, head, hl, tail, tl, pad, np.int64(p.mlen), np.int64(p.moff), plen)
            pay = _sum16(seg, 0, plen)
        else:
            pay = (plen >> 1) * fill_word + (plen & 1) * (np.int64(fill) << 8)
        pseudo = (sip >> 16) + (sip & 0xFFFF) + (dip >> 16) + (dip & 0xFFFF) + proto
        if proto == 6:
            thl = 32 if (p.flags & 0x02) else 20
            _put16(scratch, h, sp)
            _put16(scratch, h + 2, dp)
            _put32(scratch, h + 4, np.int64(p.seq))
            _put32(scratch, h + 8, np.int64(p.ack))
            scratch[h + 12] = (thl // 4) << 4
            scratch[h + 13] = p.flags
            _put16(scratch, h + 14, np.int64(p.win))
            _put32(scratch, h + 16, 0)
            if thl == 32:
                scratch[h + 20] = 2  # MSS
                scratch[h + 21] = 4
                _put16(scratch, h + 22, mss)
                scratch[h + 24] = 1  # NOP
                scratch[h + 25] = 3  # window scale 7
                scratch[h + 26] = 3
                scratch[h + 27] = 7
                scratch[h + 28] = 1
                scratch[h + 29] = 1
                scratch[h + 30] = 4  # SACK permitted
                scratch[h + 31] = 2
            s = pseudo + thl + plen + _sum16(scratch, h, thl) + pay
            _put16(scratch, h + 16, (~_fold(s)) & 0xFFFF)
            h += thl
        elif proto == 17:
            _put16(scratch, h, sp)
            _put16(scratch, h + 2, dp)
            _put16(scratch, h + 4, 8 + plen)
            _put16(scratch, h + 6, 0)
            c = (~_fold(pseudo + 8 + plen + _sum16(scratch, h, 8) + pay)) & 0xFFFF
            _put16(scratch, h + 6, 0xFFFF if c == 0 else c)
            h += 8
        else:
            scratch[h] = p.flags
            scratch[h + 1] = 0
            _put16(scratch, h + 2, 0)
            _put16(scratch, h + 4, np.int64(w.cport))
            _put16(scratch, h + 6, np.int64(p.seq) & 0xFFFF)
            _put16(scratch, h + 2, (~_fold(_sum16(scratch, h, 8) + pay)) & 0xFFFF)
            h += 8
        hn = min(h, cap)
        for k in range(hn):
            buf[o + k] = scratch[k]
        if real:
            for k in range(h, cap):
                buf[o + k] = seg[k - h]
        else:
            for k in range(h, cap):
                buf[o + k] = fill


@njit(**KERNEL_OPTS)
def _slice(seg, head, hl, tail, tl, pad, mlen, moff, plen):
    """Bytes ``moff .. moff + plen`` of the message ``head + padding + tail`` into ``seg``."""
    pad_end = mlen - tl
    for k in range(plen):
        m = moff + k
        if m < hl:
            seg[k] = head[m]
        elif m >= pad_end:
            seg[k] = tail[m - pad_end]
        else:
            seg[k] = pad

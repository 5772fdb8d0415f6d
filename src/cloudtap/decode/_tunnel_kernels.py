# mypy: disable-error-code="no-untyped-def, assignment, call-overload"
"""Tunnel walkers: VXLAN, Geneve, GRE (ERSPAN I/II/III, PPTP), GRE-in-UDP, MPLS-in-UDP, GTP-U, Teredo.

Each checks its header is complete and valid before it enters the tunnel (``_walk._enter_tunnel``).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from cloudtap.decode._walk import (
    _L_DONE,
    _L_ETH,
    _L_IPGUESS,
    _L_IPV4,
    _L_IPV6,
    _L_MPLS,
    _LEAF,
    _MAX_GTP_EXT,
    _enter_tunnel,
    _u16,
    _u32,
)
from cloudtap.schema.packet import (
    TUNNEL_ERSPAN1,
    TUNNEL_ERSPAN2,
    TUNNEL_ERSPAN3,
    TUNNEL_GENEVE,
    TUNNEL_GRE,
    TUNNEL_GRE_UDP,
    TUNNEL_GTPU,
    TUNNEL_MPLS_UDP,
    TUNNEL_TEREDO,
    TUNNEL_VXLAN,
)


# --- tunnels -------------------------------------------------------------------------------------
@njit(**_LEAF)
def _vxlan(data, pos, end, rec):
    """VXLAN (RFC 7348): I flag must be set; VNI in bytes 4-6; Ethernet follows."""
    if pos + 8 > end or not (data[pos] & 0x08):
        return _L_DONE, pos
    _enter_tunnel(rec, TUNNEL_VXLAN, _u32(data, pos + 4) >> 8)
    return _L_ETH, pos + 8


@njit(**_LEAF)
def _geneve(data, pos, end, rec):
    """Geneve (RFC 8926): version 0, options length in 4-byte words, protocol type."""
    if pos + 8 > end or (data[pos] >> 6) != 0:
        return _L_DONE, pos
    hlen = 8 + np.int64(data[pos] & 0x3F) * 4
    ptype = _u16(data, pos + 2)
    if ptype == 0x6558:
        layer = _L_ETH
    elif ptype == 0x0800:
        layer = _L_IPV4
    elif ptype == 0x86DD:
        layer = _L_IPV6
    else:
        return _L_DONE, pos
    if pos + hlen > end:
        return _L_DONE, pos
    _enter_tunnel(rec, TUNNEL_GENEVE, _u32(data, pos + 4) >> 8)
    return layer, pos + hlen


@njit(**_LEAF)
def _erspan3(data, p, end, rec):
    """ERSPAN type III header (12 bytes, + 8 with the O bit); frame type 0 Ethernet, 2 IP."""
    if p + 12 > end:
        return _L_DONE, p
    sid = _u16(data, p + 2) & 0x3FF
    ft = (data[p + 10] >> 2) & 0x1F
    hlen = 20 if (data[p + 11] & 1) else 12
    if p + hlen > end or (ft != 0 and ft != 2):
        return _L_DONE, p
    _enter_tunnel(rec, TUNNEL_ERSPAN3, sid)
    if ft == 2:
        return _L_IPGUESS, p + hlen
    return _L_ETH, p + hlen


@njit(**_LEAF)
def _gre(data, pos, end, rec):
    """GRE (RFC 2784/2890, PPTP version 1) and what rides on it: IP, TEB, MPLS, ERSPAN I/II/III."""
    if pos + 4 > end:
        return _L_DONE, pos
    f = data[pos]
    ver = data[pos + 1] & 7
    ptype = _u16(data, pos + 2)
    if ver == 1 and ptype == 0x880B:  # PPTP: key = payload length | call id; optional seq, ack
        if not (f & 0x20):
            return _L_DONE, pos
        hlen = 8 + (4 if f & 0x10 else 0) + (4 if data[pos + 1] & 0x80 else 0)
        if pos + hlen >= end:
            return _L_DONE, pos
        call_id = _u16(data, pos + 6)
        p = pos + hlen
        if p + 2 <= end and data[p] == 0xFF and data[p + 1] == 0x03:
            p += 2
        if p + 2 > end:
            return _L_DONE, pos
        proto = np.int64(data[p]) if data[p] & 1 else _u16(data, p)
        p += 1 if data[p] & 1 else 2
        if proto != 0x21 and proto != 0x57:
            return _L_DONE, pos
        _enter_tunnel(rec, TUNNEL_GRE, call_id)
        return (_L_IPV4 if proto == 0x21 else _L_IPV6), p
    if ver > 1 or (f & 0x40):  # unknown version, or RFC 1701 source routing
        return _L_DONE, pos
    # version 1 with another protocol (seen from some clouds) is read with the version 0 layout
    hlen = 4
    if f & 0x80:
        hlen += 4
    key = 0
    if f & 0x20:
        if pos + hlen + 4 > end:
            return _L_DONE, pos
        key = _u32(data, pos + hlen)
        hlen += 4
    has_seq = f & 0x10
    if has_seq:
        hlen += 4
    p = pos + hlen
    if p > end:
        return _L_DONE, pos
    if ptype == 0x0800 or ptype == 0x86DD:
        _enter_tunnel(rec, TUNNEL_GRE, key)
        return (_L_IPV4 if ptype == 0x0800 else _L_IPV6), p
    if ptype == 0x6558:
        _enter_tunnel(rec, TUNNEL_GRE, key)
        return _L_ETH, p
    if ptype == 0x8847 or ptype == 0x8848:
        _enter_tunnel(rec, TUNNEL_GRE, key)
        return _L_MPLS, p
    if ptype == 0x883E:  # WCCP redirect header, then IPv4
        if p + 4 > end:
            return _L_DONE, pos
        _enter_tunnel(rec, TUNNEL_GRE, key)
        return _L_IPGUESS, p + 4
    if ptype == 0x88BE:
        if not has_seq:  # type I: no ERSPAN header
            _enter_tunnel(rec, TUNNEL_ERSPAN1, key)
            return _L_ETH, p
        if p + 8 > end:
            return _L_DONE, pos
        ever = data[p] >> 4
        if ever == 2:
            return _erspan3(data, p, end, rec)
        if ever != 1:
            return _L_DONE, pos
        _enter_tunnel(rec, TUNNEL_ERSPAN2, _u16(data, p + 2) & 0x3FF)
        return _L_ETH, p + 8
    if ptype == 0x22EB:
        return _erspan3(data, p, end, rec)
    return _L_DONE, pos


@njit(**_LEAF)
def _gre_udp(data, pos, end, rec):
    """GRE-in-UDP (RFC 8086): a GRE header right after UDP; plain GRE is recorded as ``gre_udp``."""
    depth = rec.tunnel_depth
    layer, p = _gre(data, pos, end, rec)
    if rec.tunnel_depth != depth and rec.tunnel_type == TUNNEL_GRE:
        rec.tunnel_type = TUNNEL_GRE_UDP
    return layer, p


@njit(**_LEAF)
def _mpls_udp(data, pos, end, rec):
    """MPLS-in-UDP (RFC 7510): a label stack right after UDP; tunnel id is the top label."""
    if pos + 4 > end:
        return _L_DONE, pos
    _enter_tunnel(rec, TUNNEL_MPLS_UDP, _u32(data, pos) >> 12)
    return _L_MPLS, pos


@njit(**_LEAF)
def _gtpu(data, pos, end, rec):
    """GTPv1-U (3GPP TS 29.281) G-PDU: 8-byte header, the optional word (sequence, N-PDU, next
    extension type) when E, S or PN is set, extension headers (length in 4-byte units, last byte
    the next type), then IPv4 or IPv6. Other message types (echo, end marker) are not entered."""
    if pos + 8 > end:
        return _L_DONE, pos
    f = data[pos]
    if (f >> 5) != 1 or not (f & 0x10) or data[pos + 1] != 0xFF:
        return _L_DONE, pos
    p = pos + 8
    if f & 0x07:
        if p + 4 > end:
            return _L_DONE, pos
        nxt = data[p + 3] if f & 0x04 else 0
        p += 4
        for _ in range(_MAX_GTP_EXT):
            if nxt == 0:
                break
            if p >= end:
                return _L_DONE, pos
            elen = np.int64(data[p]) * 4
            if elen == 0 or p + elen > end:
                return _L_DONE, pos
            nxt = data[p + elen - 1]
            p += elen
        if nxt != 0:
            return _L_DONE, pos
    if p >= end:
        return _L_DONE, pos
    v = data[p] >> 4
    if v != 4 and v != 6:
        return _L_DONE, pos
    _enter_tunnel(rec, TUNNEL_GTPU, _u32(data, pos + 4))
    return (_L_IPV4 if v == 4 else _L_IPV6), p


@njit(**_LEAF)
def _teredo(data, pos, end, rec):
    """Teredo (RFC 4380): optional authentication indicator (13 bytes + id + value), optional
    origin indication (8 bytes), then exactly one IPv6 packet filling the datagram (checked, since
    3544 may also be some other flow's ephemeral port). Anything else (bubbles without a packet,
    qualification, noise) stays UDP."""
    p = pos
    if p + 4 <= end and data[p] == 0 and data[p + 1] == 1:
        p += 13 + np.int64(data[p + 2]) + np.int64(data[p + 3])
    if p + 2 <= end and data[p] == 0 and data[p + 1] == 0:
        p += 8
    if p + 6 > end or (data[p] >> 4) != 6:
        return _L_DONE, pos
    if 40 + _u16(data, p + 4) != np.int64(rec.payload_len) - (p - pos):
        return _L_DONE, pos
    _enter_tunnel(rec, TUNNEL_TEREDO, 0)
    return _L_IPV6, p

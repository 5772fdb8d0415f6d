# mypy: disable-error-code="no-untyped-def, assignment, call-overload"
"""IP and transport walkers: IPv4, IPv6 (extension headers), and the L4 header that may open a UDP tunnel."""

from __future__ import annotations

import numpy as np
from numba import njit

from cloudtap.decode._walk import (
    _INLINE,
    _L_DONE,
    _L_GENEVE,
    _L_GRE,
    _L_GRE_UDP,
    _L_GTPU,
    _L_IPV4,
    _L_IPV6,
    _L_MPLS_UDP,
    _L_TEREDO,
    _L_TRANSPORT,
    _L_VXLAN,
    _LEAF,
    _MAX_IPV6_EXT,
    _V4_LO,
    PORT_GENEVE,
    PORT_GRE_UDP,
    PORT_GTPU,
    PORT_MPLS_UDP,
    PORT_PLAIN,
    PORT_TEREDO,
    PORT_VXLAN,
    _enter_tunnel,
    _offset,
    _stop,
    _u16,
    _u32,
    _u64,
)
from cloudtap.schema.packet import (
    FLAG_FRAGMENT,
    FLAG_L4,
    FLAG_LATER_FRAGMENT,
    FLAG_MORE_FRAGMENTS,
    STATUS_MALFORMED,
    STATUS_TRUNCATED,
    TUNNEL_IPIP,
)


# --- IP ------------------------------------------------------------------------------------------
@njit(**_LEAF)
def _wire_rest(pos, start, end, wire):
    """Bytes from ``pos`` to the end of the frame on the wire (never less than captured)."""
    rest = np.int64(wire) - (pos - start)
    cap_rest = end - pos
    return rest if rest > cap_rest else cap_rest


@njit(**_INLINE)
def _ipv4(data, pos, end, start, wire, rec):
    if pos + 20 > end:
        return _stop(rec, STATUS_TRUNCATED), pos
    b0 = data[pos]
    ihl = np.int64(b0 & 15) * 4
    if (b0 >> 4) != 4 or ihl < 20:
        return _stop(rec, STATUS_MALFORMED), pos
    total = _u16(data, pos + 2)
    frag = _u16(data, pos + 6)
    rec.ip_ver = 4
    rec.proto = data[pos + 9]
    rec.src_hi = 0
    rec.src_lo = _V4_LO | np.uint64(_u32(data, pos + 12))
    rec.dst_hi = 0
    rec.dst_lo = _V4_LO | np.uint64(_u32(data, pos + 16))
    rec.frag_id = _u16(data, pos + 4)
    rec.l3_offset = _offset(pos, start)
    if total == 0:  # TSO/GSO: the NIC fills the length in later
        total = _wire_rest(pos, start, end, wire)
        if total < ihl:
            total = ihl
    elif total < ihl:
        rec.ip_len = total
        return _stop(rec, STATUS_MALFORMED), pos
    rec.ip_len = total
    more = frag & 0x2000
    off = frag & 0x1FFF
    if more or off:
        rec.flags |= FLAG_FRAGMENT
        rec.frag_offset = off
        if more:
            rec.flags |= FLAG_MORE_FRAGMENTS
        if off:
            rec.flags |= FLAG_LATER_FRAGMENT
            rec.payload_len = total - ihl
            return _L_DONE, pos
    p = pos + ihl
    if p > end:
        return _stop(rec, STATUS_TRUNCATED), pos
    nh = np.int64(rec.proto)
    for _ in range(_MAX_IPV6_EXT):  # authentication headers (RFC 4302) before the upper layer
        if nh != 51:
            break
        if p + 2 > end:
            return _stop(rec, STATUS_TRUNCATED), pos
        nh = np.int64(data[p])
        p += (np.int64(data[p + 1]) + 2) * 4
        rec.proto = nh
    if p > end:
        return _stop(rec, STATUS_TRUNCATED), pos
    return _L_TRANSPORT, p


@njit(**_INLINE)
def _ipv6(data, pos, end, start, wire, rec):
    if pos + 40 > end:
        return _stop(rec, STATUS_TRUNCATED), pos
    if (data[pos] >> 4) != 6:
        return _stop(rec, STATUS_MALFORMED), pos
    plen = _u16(data, pos + 4)
    nh = np.int64(data[pos + 6])
    rec.ip_ver = 6
    rec.src_hi = _u64(data, pos + 8)
    rec.src_lo = _u64(data, pos + 16)
    rec.dst_hi = _u64(data, pos + 24)
    rec.dst_lo = _u64(data, pos + 32)
    rec.l3_offset = _offset(pos, start)
    total = 40 + plen if plen else _wire_rest(pos, start, end, wire)
    rec.ip_len = total
    p = pos + 40
    for _ in range(_MAX_IPV6_EXT):
        if nh == 0 or nh == 43 or nh == 60 or nh == 135 or nh == 139 or nh == 140 or nh == 51:
            if p + 2 > end:
                rec.proto = nh
                return _stop(rec, STATUS_TRUNCATED), pos
            if nh == 51:
                hlen = (np.int64(data[p + 1]) + 2) * 4
            else:
                hlen = (np.int64(data[p + 1]) + 1) * 8
            nh = np.int64(data[p])
            p += hlen
        elif nh == 44:
            if p + 8 > end:
                rec.proto = nh
                return _stop(rec, STATUS_TRUNCATED), pos
            fo = _u16(data, p + 2)
            off = fo >> 3
            rec.frag_id = _u32(data, p + 4)
            nh = np.int64(data[p])
            p += 8
            if off or (fo & 1):
                rec.flags |= FLAG_FRAGMENT
                rec.frag_offset = off
                if fo & 1:
                    rec.flags |= FLAG_MORE_FRAGMENTS
                if off:
                    rec.flags |= FLAG_LATER_FRAGMENT
                    rec.proto = nh
                    rest = total - (p - pos)
                    rec.payload_len = rest if rest > 0 else 0
                    return _L_DONE, pos
        else:
            break
    rec.proto = nh
    if p > end:
        return _stop(rec, STATUS_TRUNCATED), pos
    return _L_TRANSPORT, p


@njit(**_LEAF)
def _udp_tunnel_layer(kind):
    """Walk state for the UDP payload of a PORT_* other than VXLAN and Geneve."""
    if kind == PORT_GTPU:
        return _L_GTPU
    if kind == PORT_TEREDO:
        return _L_TEREDO
    if kind == PORT_GRE_UDP:
        return _L_GRE_UDP
    if kind == PORT_MPLS_UDP:
        return _L_MPLS_UDP
    return _L_DONE


# --- transport -----------------------------------------------------------------------------------
@njit(**_LEAF)
def _payload(rec, rest, hdr):
    v = rest - hdr
    rec.payload_len = v if v > 0 else 0


@njit(**_LEAF)
def _cut_ports(data, pos, end, rec):
    """L4 header cut short: keep the ports if they were captured (no FLAG_L4), status truncated."""
    if pos + 4 <= end:
        rec.sport = _u16(data, pos)
        rec.dport = _u16(data, pos + 2)
    return _stop(rec, STATUS_TRUNCATED)


@njit(**_INLINE)
def _transport(data, pos, end, start, l3, rec, port_kind, max_depth):
    """Decode the L4 header after the IP header at ``l3``; hand tunnels to their layer."""
    proto = rec.proto
    rest = np.int64(rec.ip_len) - (pos - l3)
    if pos < end:
        rec.l4_offset = _offset(pos, start)
    can_tunnel = rec.tunnel_depth < max_depth and not (rec.flags & FLAG_FRAGMENT)
    if proto == 6:
        _payload(rec, rest, 20)
        if pos + 20 > end:
            return _cut_ports(data, pos, end, rec), pos
        rec.sport = _u16(data, pos)
        rec.dport = _u16(data, pos + 2)
        rec.tcp_seq = _u32(data, pos + 4)
        rec.tcp_ack = _u32(data, pos + 8)
        doff = np.int64(data[pos + 12] >> 4) * 4
        rec.tcp_flags = data[pos + 13]
        rec.tcp_win = _u16(data, pos + 14)
        if doff < 20:
            return _stop(rec, STATUS_MALFORMED), pos
        rec.flags |= FLAG_L4
        _payload(rec, rest, doff)
        return _L_DONE, pos
    if proto == 17 or proto == 136:  # UDP, UDP-Lite
        _payload(rec, rest, 8)
        if pos + 8 > end:
            return _cut_ports(data, pos, end, rec), pos
        sport = _u16(data, pos)
        dport = _u16(data, pos + 2)
        rec.sport = sport
        rec.dport = dport
        rec.flags |= FLAG_L4
        if can_tunnel and proto == 17:
            kind = np.int64(port_kind[dport]) & 15
            if kind == PORT_PLAIN:
                kind = np.int64(port_kind[sport]) >> 4
                if kind == PORT_PLAIN:
                    return _L_DONE, pos
            if kind == PORT_VXLAN:
                return _L_VXLAN, pos + 8
            if kind == PORT_GENEVE:
                return _L_GENEVE, pos + 8
            return _udp_tunnel_layer(kind), pos + 8
        return _L_DONE, pos
    if proto == 1 or proto == 58:
        _payload(rec, rest, 8)
        if pos + 4 > end:
            return _stop(rec, STATUS_TRUNCATED), pos
        t = data[pos]
        rec.icmp_type = t
        if (proto == 1 and (t == 8 or t == 0)) or (proto == 58 and (t == 128 or t == 129)):
            if pos + 8 > end:
                return _stop(rec, STATUS_TRUNCATED), pos
            ident = _u16(data, pos + 4)
            rec.sport = ident
            rec.dport = ident
        else:
            rec.dport = (np.int64(t) << 8) | np.int64(data[pos + 1])
        rec.flags |= FLAG_L4
        return _L_DONE, pos
    if proto == 132 or proto == 33:  # SCTP, DCCP: ports first, 12-byte common header
        _payload(rec, rest, 12)
        if pos + 12 > end:
            return _cut_ports(data, pos, end, rec), pos
        rec.sport = _u16(data, pos)
        rec.dport = _u16(data, pos + 2)
        rec.flags |= FLAG_L4
        return _L_DONE, pos
    _payload(rec, rest, 0)
    if can_tunnel:
        if proto == 47:
            return _L_GRE, pos
        if proto == 4 or proto == 41:
            _enter_tunnel(rec, TUNNEL_IPIP, 0)
            return (_L_IPV4 if proto == 4 else _L_IPV6), pos
    return _L_DONE, pos

# mypy: disable-error-code="no-untyped-def, assignment, call-overload"
"""Numba header walkers: raw frames in, one ``PACKET_DTYPE`` row per frame out.

The walk is a small state machine: each layer function reads one header, fills the row and
returns ``(next_layer, next_position)``. Positions are absolute indices into the batch buffer;
``end`` is one past the last captured byte of the frame and every read is checked against it.
Layer functions never raise: a short header sets ``STATUS_TRUNCATED``, a self-contradicting one
``STATUS_MALFORMED``, and the walk stops (``_L_DONE``).

The whole walk stays in this one module on purpose: numba's on-disk cache is invalidated by the
source file of the cached function only, so a layer moved to another module and inlined or linked
into ``decode_batch`` would keep running its old code after an edit until the cache is cleared.

Tunnels are entered only when decapsulation depth allows it, the outer packet is not an IP
fragment and the tunnel header is fully captured and valid; entering copies the current IP
addresses to ``tunnel_src/dst`` and clears the inner fields (see ``_enter_tunnel``).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from cloudtap._kernel_opts import KERNEL_OPTS
from cloudtap.schema.packet import (
    FLAG_FRAGMENT,
    FLAG_L4,
    FLAG_LATER_FRAGMENT,
    FLAG_MORE_FRAGMENTS,
    FLAG_TUNNEL,
    IPV4_MAPPED_LO,
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_LOOP,
    LINKTYPE_NFLOG,
    LINKTYPE_NULL,
    LINKTYPE_RAW,
    STATUS_MALFORMED,
    STATUS_NOT_IP,
    STATUS_OK,
    STATUS_TRUNCATED,
    STATUS_UNKNOWN_LINKTYPE,
    TUNNEL_ERSPAN1,
    TUNNEL_ERSPAN2,
    TUNNEL_ERSPAN3,
    TUNNEL_GENEVE,
    TUNNEL_GRE,
    TUNNEL_GRE_UDP,
    TUNNEL_GTPU,
    TUNNEL_IPIP,
    TUNNEL_MPLS_UDP,
    TUNNEL_TEREDO,
    TUNNEL_VXLAN,
)

#: Most tunnels decapsulated in one frame; deeper ones are reported as the tunnel packet.
MAX_TUNNEL_DEPTH = 8
#: Values of the UDP port lookup table: the low nibble of ``port_kind[port]`` is the tunnel
#: carried to that destination port, the high nibble the one carried from that source port
#: (Teredo and GTP-U are recognised on either port, like their RFCs allow).
PORT_PLAIN = 0
PORT_VXLAN = 1
PORT_GENEVE = 2
PORT_GTPU = 3
PORT_TEREDO = 4
PORT_GRE_UDP = 5
PORT_MPLS_UDP = 6

_MAX_LAYERS = 128  # headers walked per frame (8 tunnels * a handful of headers each, with room)
_MAX_VLAN_TAGS = 16
_MAX_MPLS_LABELS = 16
_MAX_IPV6_EXT = 16
_MAX_GTP_EXT = 16
_MAX_NFLOG_TLVS = 64
_V4_LO = np.uint64(IPV4_MAPPED_LO)
_OFF_MAX = 0xFFFF
# Compile options (measured on 1M Ethernet/IPv4/TCP frames). Passing arrays between njit functions
# costs an atomic NRT incref/decref per call; that alone held the decoder at ~11 Mpps. The hot
# layers (_INLINE) are inlined at numba-IR level into the driver, and every function that is
# still called is compiled without NRT (``_nrt=False``: no refcounting; nothing here allocates),
# which gives ~45 Mpps. Inlining everything gains nothing more and doubles the compile time.
_INLINE = {**KERNEL_OPTS, "inline": "always"}
_LEAF = {**KERNEL_OPTS, "_nrt": False}

# walk states
_L_DONE = 0
_L_ETH = 1
_L_IPV4 = 2
_L_IPV6 = 3
_L_MPLS = 4
_L_PPPOE = 5
_L_PBB = 6
_L_TRANSPORT = 7
_L_VXLAN = 8
_L_GENEVE = 9
_L_GRE = 10
_L_IPGUESS = 11
_L_SLL = 12
_L_SLL2 = 13
_L_NULL = 14
_L_PPP = 15
_L_GTPU = 16
_L_TEREDO = 17
_L_GRE_UDP = 18
_L_MPLS_UDP = 19
_L_NFLOG = 20

#: PPP link types (not in the schema's list; decoded as a bonus).
LINKTYPE_PPP = 9
LINKTYPE_PPP_HDLC = 50


# --- reads (callers check bounds first) -------------------------------------------------------
@njit(**_LEAF)
def _u16(data, p):
    return (np.int64(data[p]) << 8) | np.int64(data[p + 1])


@njit(**_LEAF)
def _u32(data, p):
    return (
        (np.int64(data[p]) << 24)
        | (np.int64(data[p + 1]) << 16)
        | (np.int64(data[p + 2]) << 8)
        | np.int64(data[p + 3])
    )


@njit(**_LEAF)
def _u64(data, p):
    return (np.uint64(_u32(data, p)) << np.uint64(32)) | np.uint64(_u32(data, p + 4))


@njit(**_LEAF)
def _mac(data, p):
    return (_u16(data, p) << 32) | _u32(data, p + 2)


# --- row bookkeeping ------------------------------------------------------------------------------
@njit(**_INLINE)
def _clear_ip(rec):
    """Zero every field that describes the (innermost) IP packet."""
    rec.src_hi = 0
    rec.src_lo = 0
    rec.dst_hi = 0
    rec.dst_lo = 0
    rec.tcp_seq = 0
    rec.tcp_ack = 0
    rec.ip_len = 0
    rec.payload_len = 0
    rec.frag_id = 0
    rec.sport = 0
    rec.dport = 0
    rec.tcp_win = 0
    rec.frag_offset = 0
    rec.l3_offset = 0
    rec.l4_offset = 0
    rec.proto = 0
    rec.ip_ver = 0
    rec.tcp_flags = 0
    rec.icmp_type = 0


@njit(**_INLINE)
def _reset_row(rec):
    """Zero the whole row except the per-frame fields the driver sets."""
    _clear_ip(rec)
    rec.tunnel_src_hi = 0
    rec.tunnel_src_lo = 0
    rec.tunnel_dst_hi = 0
    rec.tunnel_dst_lo = 0
    rec.src_mac = 0
    rec.dst_mac = 0
    rec.tunnel_id = 0
    rec.vlan = 0
    rec.tunnel_type = 0
    rec.tunnel_depth = 0
    rec.status = STATUS_OK
    rec.flags = 0


@njit(**_LEAF)
def _enter_tunnel(rec, ttype, tid):
    """Record the current IP packet as the outer side of a tunnel and clear the inner fields."""
    rec.tunnel_src_hi = rec.src_hi
    rec.tunnel_src_lo = rec.src_lo
    rec.tunnel_dst_hi = rec.dst_hi
    rec.tunnel_dst_lo = rec.dst_lo
    rec.tunnel_type = ttype
    rec.tunnel_id = tid
    rec.tunnel_depth += 1
    rec.flags = FLAG_TUNNEL
    _clear_ip(rec)


@njit(**_LEAF)
def _offset(pos, start):
    rel = pos - start
    return rel if rel < _OFF_MAX else _OFF_MAX


@njit(**_LEAF)
def _stop(rec, status):
    rec.status = status
    return _L_DONE


# --- link layers ---------------------------------------------------------------------------------
@njit(**_LEAF)
def _ip_by_nibble(data, pos, end, rec, bad_status):
    """Pick IPv4/IPv6 from the version nibble (raw IP, MPLS payload, ERSPAN III IP frames)."""
    if pos >= end:
        return _stop(rec, STATUS_TRUNCATED), pos
    v = data[pos] >> 4
    if v == 4:
        return _L_IPV4, pos
    if v == 6:
        return _L_IPV6, pos
    return _stop(rec, bad_status), pos


@njit(**_INLINE)
def _ethertype(data, pos, end, etype, rec):
    """Skip VLAN tags (the outermost sets ``vlan``), VN-Tags, 802.1BR E-tags and Arista timestamp
    headers, then map the ethertype to the next layer."""
    if etype == 0x0800:
        return _L_IPV4, pos
    first = True
    for _ in range(_MAX_VLAN_TAGS):
        if etype == 0x8100 or etype == 0x88A8 or etype == 0x9100 or etype == 0x9200:
            if pos + 4 > end:
                return _stop(rec, STATUS_TRUNCATED), pos
            if first:
                rec.vlan = _u16(data, pos) & 0xFFF
                first = False
            etype = _u16(data, pos + 2)
            pos += 4
        elif etype == 0x8926:  # Cisco VN-Tag: 4 bytes after the TPID
            if pos + 6 > end:
                return _stop(rec, STATUS_TRUNCATED), pos
            etype = _u16(data, pos + 4)
            pos += 6
        elif etype == 0x893F:  # IEEE 802.1BR E-tag: 6 bytes after the TPID
            if pos + 8 > end:
                return _stop(rec, STATUS_TRUNCATED), pos
            etype = _u16(data, pos + 6)
            pos += 8
        elif etype == 0xD28B:  # Arista timestamp: subtype 1, version 0x0010/0x0110 (64-bit) or
            if pos + 4 > end:  # 0x0020/0x0120 (48-bit); other versions are not read (as tshark)
                return _stop(rec, STATUS_TRUNCATED), pos
            kind = data[pos + 3]
            if _u16(data, pos) != 1 or data[pos + 2] > 1 or (kind != 0x10 and kind != 0x20):
                break
            hlen = 12 if kind == 0x10 else 10
            if pos + hlen + 2 > end:
                return _stop(rec, STATUS_TRUNCATED), pos
            etype = _u16(data, pos + hlen)
            pos += hlen + 2
        else:
            break
    if etype == 0x0800:
        return _L_IPV4, pos
    if etype == 0x86DD:
        return _L_IPV6, pos
    if etype == 0x8847 or etype == 0x8848:
        return _L_MPLS, pos
    if etype == 0x8864:
        return _L_PPPOE, pos
    if etype == 0x88E7:
        return _L_PBB, pos
    return _stop(rec, STATUS_NOT_IP), pos


@njit(**_INLINE)
def _ethernet(data, pos, end, rec):
    if pos + 14 > end:
        return _stop(rec, STATUS_TRUNCATED), pos
    rec.dst_mac = _mac(data, pos)
    rec.src_mac = _mac(data, pos + 6)
    rec.vlan = 0
    etype = _u16(data, pos + 12)
    pos += 14
    if etype < 0x0600:  # 802.3 length: only LLC/SNAP can carry an ethertype
        if pos + 8 > end:
            return _stop(rec, STATUS_NOT_IP), pos
        if data[pos] != 0xAA or data[pos + 1] != 0xAA or data[pos + 2] != 0x03:
            return _stop(rec, STATUS_NOT_IP), pos
        etype = _u16(data, pos + 6)
        pos += 8
    return _ethertype(data, pos, end, etype, rec)


@njit(**_LEAF)
def _pbb(data, pos, end, rec):
    """802.1ah I-tag: 4 bytes, then the customer Ethernet header."""
    if pos + 4 > end:
        return _stop(rec, STATUS_TRUNCATED), pos
    return _L_ETH, pos + 4


@njit(**_LEAF)
def _mpls(data, pos, end, rec):
    """Walk the label stack to bottom-of-stack, then guess the payload."""
    for _ in range(_MAX_MPLS_LABELS):
        if pos + 4 > end:
            return _stop(rec, STATUS_TRUNCATED), pos
        bottom = data[pos + 2] & 1
        pos += 4
        if bottom:
            if pos >= end:
                return _stop(rec, STATUS_TRUNCATED), pos
            nibble = data[pos] >> 4
            if nibble == 0:  # pseudo-wire control word, then Ethernet
                if pos + 4 > end:
                    return _stop(rec, STATUS_TRUNCATED), pos
                return _L_ETH, pos + 4
            return _ip_by_nibble(data, pos, end, rec, STATUS_NOT_IP)
    return _stop(rec, STATUS_MALFORMED), pos


@njit(**_LEAF)
def _ppp_proto(data, pos, end, rec):
    """PPP (optional FF 03, 1- or 2-byte protocol) -> IP or MPLS layer."""
    if pos + 2 <= end and data[pos] == 0xFF and data[pos + 1] == 0x03:
        pos += 2
    if pos >= end:
        return _stop(rec, STATUS_TRUNCATED), pos
    if data[pos] & 1:
        proto = np.int64(data[pos])
        pos += 1
    else:
        if pos + 2 > end:
            return _stop(rec, STATUS_TRUNCATED), pos
        proto = _u16(data, pos)
        pos += 2
    if proto == 0x21:
        return _L_IPV4, pos
    if proto == 0x57:
        return _L_IPV6, pos
    if proto == 0x281 or proto == 0x283:
        return _L_MPLS, pos
    return _stop(rec, STATUS_NOT_IP), pos


@njit(**_LEAF)
def _pppoe(data, pos, end, rec):
    if pos + 7 > end:
        return _stop(rec, STATUS_TRUNCATED), pos
    if data[pos] != 0x11 or data[pos + 1] != 0:
        return _stop(rec, STATUS_MALFORMED), pos
    return _ppp_proto(data, pos + 6, end, rec)


@njit(**_LEAF)
def _sll(data, pos, end, rec):
    """Linux cooked v1: type, ARPHRD, addr len, 8-byte addr, protocol."""
    if pos + 16 > end:
        return _stop(rec, STATUS_TRUNCATED), pos
    if _u16(data, pos + 4) == 6:
        rec.src_mac = _mac(data, pos + 6)
    return _ethertype(data, pos + 16, end, _u16(data, pos + 14), rec)


@njit(**_LEAF)
def _sll2(data, pos, end, rec):
    """Linux cooked v2: protocol, reserved, ifindex, ARPHRD, type, addr len, 8-byte addr."""
    if pos + 20 > end:
        return _stop(rec, STATUS_TRUNCATED), pos
    if data[pos + 11] == 6:
        rec.src_mac = _mac(data, pos + 12)
    return _ethertype(data, pos + 20, end, _u16(data, pos), rec)


@njit(**_LEAF)
def _is_af_inet6(v):
    return v == 24 or v == 28 or v == 30


@njit(**_LEAF)
def _null(data, pos, end, rec):
    """BSD loopback: 4-byte address family in either byte order."""
    if pos + 4 > end:
        return _stop(rec, STATUS_TRUNCATED), pos
    be = _u32(data, pos)
    le = (
        np.int64(data[pos])
        | (np.int64(data[pos + 1]) << 8)
        | (np.int64(data[pos + 2]) << 16)
        | (np.int64(data[pos + 3]) << 24)
    )
    if be == 2 or le == 2:
        return _L_IPV4, pos + 4
    if _is_af_inet6(be) or _is_af_inet6(le):
        return _L_IPV6, pos + 4
    etype = _u16(data, pos + 2)  # some stacks put an ethertype in the low 16 bits
    if etype == 0x0800:
        return _L_IPV4, pos + 4
    if etype == 0x86DD:
        return _L_IPV6, pos + 4
    return _stop(rec, STATUS_NOT_IP), pos


@njit(**_LEAF)
def _u16_le(data, p):
    return np.int64(data[p]) | (np.int64(data[p + 1]) << 8)


@njit(**_LEAF)
def _nflog(data, pos, end, rec):
    """Linux NFLOG: family, version, resource id, then TLVs up to the packet (type 9, NFULA_PAYLOAD).

    TLV length (header included, padded to 4) and type are in the capturing host's byte order:
    little-endian unless the first TLV's length only makes sense big-endian.
    """
    if pos + 4 > end:
        return _stop(rec, STATUS_TRUNCATED), pos
    family = data[pos]
    p = pos + 4
    little = True
    for k in range(_MAX_NFLOG_TLVS):
        if p + 4 > end:
            return _stop(rec, STATUS_TRUNCATED), pos
        if k == 0:
            le_len = _u16_le(data, p)
            be_len = _u16(data, p)
            little = (4 <= le_len <= end - p) or not (4 <= be_len <= end - p)
        tlen = _u16_le(data, p) if little else _u16(data, p)
        ttype = (_u16_le(data, p + 2) if little else _u16(data, p + 2)) & 0x3FFF
        if tlen < 4:
            return _stop(rec, STATUS_MALFORMED), pos
        if ttype == 9:
            if family == 2:
                return _L_IPV4, p + 4
            if family == 10:
                return _L_IPV6, p + 4
            return _ip_by_nibble(data, p + 4, end, rec, STATUS_NOT_IP)
        p += (tlen + 3) & ~3
    return _stop(rec, STATUS_NOT_IP), pos


@njit(**_INLINE)
def _link(data, start, end, lt, rec):
    """First layer for a link type."""
    if lt == LINKTYPE_ETHERNET:
        return _L_ETH, start
    if lt == LINKTYPE_RAW or lt == 12 or lt == 14:
        return _L_IPGUESS, start
    if lt == LINKTYPE_IPV4:
        return _L_IPV4, start
    if lt == LINKTYPE_IPV6:
        return _L_IPV6, start
    if lt == LINKTYPE_LINUX_SLL:
        return _L_SLL, start
    if lt == LINKTYPE_LINUX_SLL2:
        return _L_SLL2, start
    if lt == LINKTYPE_NULL or lt == LINKTYPE_LOOP:
        return _L_NULL, start
    if lt == LINKTYPE_PPP or lt == LINKTYPE_PPP_HDLC:
        return _L_PPP, start
    if lt == LINKTYPE_NFLOG:
        return _L_NFLOG, start
    return _stop(rec, STATUS_UNKNOWN_LINKTYPE), start


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


# --- drivers -------------------------------------------------------------------------------------
@njit(**_INLINE)
def decode_frame(data, start, end, wire, lt, port_kind, max_depth, rec):
    """Decode one frame ``data[start:end]`` into ``rec``, decapsulating at most ``max_depth`` tunnels."""
    _reset_row(rec)
    layer, pos = _link(data, start, end, lt, rec)
    l3 = start
    for _ in range(_MAX_LAYERS):
        if layer == _L_DONE:
            return
        if layer == _L_ETH:
            layer, pos = _ethernet(data, pos, end, rec)
        elif layer == _L_IPV4:
            l3 = pos
            layer, pos = _ipv4(data, pos, end, start, wire, rec)
        elif layer == _L_IPV6:
            l3 = pos
            layer, pos = _ipv6(data, pos, end, start, wire, rec)
        elif layer == _L_TRANSPORT:
            layer, pos = _transport(data, pos, end, start, l3, rec, port_kind, max_depth)
        elif layer == _L_VXLAN:
            layer, pos = _vxlan(data, pos, end, rec)
        elif layer == _L_GENEVE:
            layer, pos = _geneve(data, pos, end, rec)
        elif layer == _L_GRE:
            layer, pos = _gre(data, pos, end, rec)
        elif layer == _L_MPLS:
            layer, pos = _mpls(data, pos, end, rec)
        elif layer == _L_IPGUESS:
            layer, pos = _ip_by_nibble(data, pos, end, rec, STATUS_MALFORMED)
        elif layer == _L_PPPOE:
            layer, pos = _pppoe(data, pos, end, rec)
        elif layer == _L_PBB:
            layer, pos = _pbb(data, pos, end, rec)
        elif layer == _L_SLL:
            layer, pos = _sll(data, pos, end, rec)
        elif layer == _L_SLL2:
            layer, pos = _sll2(data, pos, end, rec)
        elif layer == _L_NULL:
            layer, pos = _null(data, pos, end, rec)
        elif layer == _L_PPP:
            layer, pos = _ppp_proto(data, pos, end, rec)
        elif layer == _L_GTPU:
            layer, pos = _gtpu(data, pos, end, rec)
        elif layer == _L_TEREDO:
            layer, pos = _teredo(data, pos, end, rec)
        elif layer == _L_GRE_UDP:
            layer, pos = _gre_udp(data, pos, end, rec)
        elif layer == _L_MPLS_UDP:
            layer, pos = _mpls_udp(data, pos, end, rec)
        elif layer == _L_NFLOG:
            layer, pos = _nflog(data, pos, end, rec)
        else:
            layer = _stop(rec, STATUS_MALFORMED)
    rec.status = STATUS_MALFORMED  # header chain longer than any sane frame


@njit(**KERNEL_OPTS, _nrt=False)
def decode_batch(data, offset, cap_len, wire_len, ts_ns, linktype, port_kind, max_depth, out):
    """Decode every frame of a batch into ``out`` (``PACKET_DTYPE``, one row per frame).

    A tunnel whose inner packet turns out malformed, or cut before its IP header, is reported
    as the tunnel packet itself: the frame is decoded again with one tunnel level less.
    """
    size = data.shape[0]
    for i in range(offset.shape[0]):
        start = offset[i]
        cap = np.int64(cap_len[i])
        if start < 0 or start > size:
            start = size
            cap = 0
        if cap > size - start:
            cap = size - start
        end = start + cap
        rec = out[i]
        depth = max_depth
        lt = linktype[i]
        wire = wire_len[i]
        while True:
            decode_frame(data, start, end, wire, lt, port_kind, depth, rec)
            if rec.tunnel_depth == 0:
                break
            st = rec.status
            if st == STATUS_MALFORMED or (st == STATUS_TRUNCATED and rec.ip_ver == 0):
                depth = np.int64(rec.tunnel_depth) - 1
            else:
                break
        rec.ts_ns = ts_ns[i]
        rec.wire_len = wire
        rec.cap_len = cap
        rec.frame_index = i

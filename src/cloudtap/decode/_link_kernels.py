# mypy: disable-error-code="no-untyped-def, assignment, call-overload"
"""Link-layer walkers: Ethernet (tags, VN-Tag, E-tag, LLC/SNAP), MPLS, PBB, PPP/PPPoE, SLL/SLL2, NULL/LOOP, NFLOG."""

from __future__ import annotations

import numpy as np
from numba import njit

from cloudtap.decode._walk import (
    _INLINE,
    _L_ETH,
    _L_IPGUESS,
    _L_IPV4,
    _L_IPV6,
    _L_MPLS,
    _L_NFLOG,
    _L_NULL,
    _L_PBB,
    _L_PPP,
    _L_PPPOE,
    _L_SLL,
    _L_SLL2,
    _LEAF,
    _MAX_MPLS_LABELS,
    _MAX_NFLOG_TLVS,
    _MAX_VLAN_TAGS,
    LINKTYPE_PPP,
    LINKTYPE_PPP_HDLC,
    _mac,
    _stop,
    _u16,
    _u32,
)
from cloudtap.schema.packet import (
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
    STATUS_TRUNCATED,
    STATUS_UNKNOWN_LINKTYPE,
)


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

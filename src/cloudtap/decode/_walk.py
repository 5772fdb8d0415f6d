# mypy: disable-error-code="no-untyped-def, assignment, call-overload"
"""What every header walker shares: walk states, limits, byte reads and row bookkeeping.

Layer functions (``_link_kernels``, ``_ip_kernels``, ``_tunnel_kernels``) read one header each and return
``(next_layer, next_position)`` with a walk state from here; ``_kernels.decode_frame`` runs the walk.
Reads do not check bounds: their callers do, against ``end``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from cloudtap._kernel_opts import KERNEL_OPTS, NO_ALLOC_OPTS
from cloudtap.schema.packet import (
    FLAG_TUNNEL,
    IPV4_MAPPED_LO,
    STATUS_OK,
)

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
_LEAF = NO_ALLOC_OPTS

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

"""The decoded-packet contract: what the decoder hands to the meter.

Capture sources produce a :class:`~cloudtap.capture.frames.FrameBatch` (raw frames in one buffer);
the decoder turns it into one ``PACKET_DTYPE`` row per frame. Everything downstream (fragment
association, BPF filtering, metering, the packet store) reads only these columns.

Addresses are 128-bit, kept as two ``uint64`` halves (``*_hi``, ``*_lo``) in network order:
an IPv4 address ``a.b.c.d`` is stored IPv4-mapped (``::ffff:a.b.c.d``), i.e. ``hi == 0`` and
``lo == 0x0000_ffff_0000_0000 | a<<24 | b<<16 | c<<8 | d``.
"""

from __future__ import annotations

import numpy as np

#: IPv4-mapped IPv6 prefix as the upper 32 bits of the low half.
IPV4_MAPPED_LO: int = 0x0000_FFFF_0000_0000

# --- status: why a frame did (not) yield a meterable packet -----------------------------------
STATUS_OK = 0  #: innermost IP + L4 header decoded (or IP with no L4 we know: still metered)
STATUS_NOT_IP = 1  #: no IP inside (ARP, LLDP, STP...): counted, not metered
STATUS_TRUNCATED = 2  #: capture length ended inside a header needed for the key
STATUS_MALFORMED = 3  #: a header contradicts itself (bad IHL, bad version, length < header)
STATUS_UNKNOWN_LINKTYPE = 4  #: link type the decoder does not know
STATUS_NAMES = ("ok", "not_ip", "truncated", "malformed", "unknown_linktype")

# --- flags bit field -----------------------------------------------------------------------------
FLAG_FRAGMENT = 1  #: IP fragment (first or later)
FLAG_MORE_FRAGMENTS = 2  #: MF bit / IPv6 M flag set
FLAG_LATER_FRAGMENT = 4  #: fragment offset > 0: no L4 header in this packet
FLAG_L4 = 8  #: L4 header fully present (ports, and for TCP seq/ack/flags/window)
FLAG_TUNNEL = 16  #: at least one tunnel was decapsulated
FLAG_ORPHAN_FRAGMENT = 32  #: set by fragment association: later fragment whose first was not seen

# --- tunnel types (innermost tunnel is recorded; depth counts all) ----------------------------
TUNNEL_NONE = 0
TUNNEL_VXLAN = 1
TUNNEL_GENEVE = 2
TUNNEL_GRE = 3  #: plain GRE (IP payload) and GRE-TEB (0x6558, Ethernet payload)
TUNNEL_ERSPAN1 = 4
TUNNEL_ERSPAN2 = 5
TUNNEL_ERSPAN3 = 6
TUNNEL_IPIP = 7  #: 4in4, 6in4 / 6to4 (IP protocol 41), 4in6, 6in6
TUNNEL_GTPU = 8  #: GTPv1-U G-PDU (UDP 2152); tunnel_id is the TEID
TUNNEL_TEREDO = 9  #: Teredo (RFC 4380, UDP 3544): IPv6 in UDP/IPv4
TUNNEL_GRE_UDP = 10  #: GRE-in-UDP (RFC 8086, UDP 4754); tunnel_id is the GRE key
TUNNEL_MPLS_UDP = 11  #: MPLS-in-UDP (RFC 7510, UDP 6635); tunnel_id is the top label
TUNNEL_NAMES = (
    "", "vxlan", "geneve", "gre", "erspan1", "erspan2", "erspan3", "ipip",
    "gtpu", "teredo", "gre_udp", "mpls_udp",
)  # fmt: skip

# --- link types we decode (pcap LINKTYPE_* values) ----------------------------------------------
LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276
LINKTYPE_NFLOG = 239  #: Linux netfilter log: TLVs, the packet in TLV type 9 (NFULA_PAYLOAD)
#: Some BSD captures write DLT_RAW as 12 or 14 in the file header.
LINKTYPE_RAW_ALIASES = (12, 14)

PACKET_FIELDS: tuple[tuple[str, str, str], ...] = (
    # name, numpy type, meaning
    ("ts_ns", "i8", "capture timestamp, ns since the Unix epoch"),
    ("src_hi", "u8", "innermost IP source address, upper 64 bits"),
    ("src_lo", "u8", "innermost IP source address, lower 64 bits (IPv4 mapped)"),
    ("dst_hi", "u8", "innermost IP destination address, upper 64 bits"),
    ("dst_lo", "u8", "innermost IP destination address, lower 64 bits"),
    ("tunnel_src_hi", "u8", "outer IP source of the innermost tunnel, upper 64 bits"),
    ("tunnel_src_lo", "u8", "outer IP source of the innermost tunnel, lower 64 bits"),
    ("tunnel_dst_hi", "u8", "outer IP destination of the innermost tunnel, upper 64 bits"),
    ("tunnel_dst_lo", "u8", "outer IP destination of the innermost tunnel, lower 64 bits"),
    ("src_mac", "u8", "source MAC of the Ethernet header carrying the innermost IP (0 if none)"),
    ("dst_mac", "u8", "destination MAC of that Ethernet header"),
    ("tcp_seq", "u4", "TCP sequence number"),
    ("tcp_ack", "u4", "TCP acknowledgement number"),
    (
        "tunnel_id",
        "u4",
        "VNI (VXLAN/Geneve), GRE key / PPTP call id, ERSPAN session id, GTP-U TEID or top MPLS"
        " label (MPLS-in-UDP) of the innermost tunnel; 0 for IP-in-IP and Teredo",
    ),
    ("wire_len", "u4", "frame length on the wire (pcap orig_len), link header included"),
    ("cap_len", "u4", "bytes captured of this frame"),
    ("ip_len", "u4", "innermost IP packet length from its header (IPv4 total length, IPv6 40+payload)"),
    ("payload_len", "u4", "L4 payload bytes from the headers (not limited by snap length)"),
    ("frag_id", "u4", "IPv4 identification / IPv6 fragment identification"),
    ("frame_index", "u4", "index of the frame in its batch"),
    ("sport", "u2", "source port; ICMP echo: identifier; other ICMP: 0"),
    ("dport", "u2", "destination port; ICMP echo: identifier; other ICMP: type<<8|code"),
    ("vlan", "u2", "outermost 802.1Q/802.1ad VLAN id of the Ethernet header carrying the innermost IP"),
    ("tcp_win", "u2", "TCP window field as sent (unscaled)"),
    ("frag_offset", "u2", "fragment offset in 8-byte units"),
    ("interface", "u2", "capture interface of the frame (FrameBatch.interface): the observation point"),
    ("l3_offset", "u2", "offset of the innermost IP header in the frame"),
    ("l4_offset", "u2", "offset of the L4 header in the frame (0 if none)"),
    ("proto", "u1", "IP protocol of the innermost packet (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6, 132 SCTP...)"),
    ("ip_ver", "u1", "4 or 6; 0 when not IP"),
    ("tcp_flags", "u1", "TCP flags byte (FIN 1, SYN 2, RST 4, PSH 8, ACK 16, URG 32, ECE 64, CWR 128)"),
    ("tunnel_type", "u1", "TUNNEL_* of the innermost tunnel"),
    ("tunnel_depth", "u1", "how many tunnels were decapsulated"),
    ("status", "u1", "STATUS_*"),
    ("flags", "u1", "FLAG_* bits"),
    ("icmp_type", "u1", "ICMP/ICMPv6 type"),
)

#: One decoded packet. Aligned so numba reads each field without unaligned loads.
PACKET_DTYPE = np.dtype([(name, typ) for name, typ, _ in PACKET_FIELDS], align=True)

TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_PSH = 0x08
TCP_ACK = 0x10
TCP_URG = 0x20
TCP_ECE = 0x40
TCP_CWR = 0x80

PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_ICMPV6 = 58
PROTO_SCTP = 132


def empty_packets(n: int) -> np.ndarray:
    """Return a zeroed array of ``n`` decoded packets."""
    return np.zeros(n, dtype=PACKET_DTYPE)

"""Flow-table state layouts (numpy structured dtypes) shared by the meter kernels.

The table is struct-of-records: ``FLOW_STATE_DTYPE`` holds one flow (key, times, handshake),
``DIR_STATE_DTYPE`` holds one direction of one flow (counters since the last record, TCP sequence
tracking); direction ``d`` of slot ``s`` is row ``2*s + d`` (0 = client to server, 1 = server to client).
A slot takes 160 + 2 x 88 bytes of state: fields are as narrow as their values allow for the flow's lifetime,
and the records (``FLOW_DTYPE``) widen them again (see docs/agent.md, Memory).

Also here: the slots of the ``st`` statistics vector and the ``cfg`` vector, and the protocol constants
the kernels (``_slots``, ``_emit``, ``_kernels``) share.
"""

from __future__ import annotations

import numpy as np

FLOW_STATE_DTYPE = np.dtype(
    [
        ("client_hi", "u8"),
        ("client_lo", "u8"),
        ("server_hi", "u8"),
        ("server_lo", "u8"),
        ("tunnel_src_hi", "u8"),
        ("tunnel_src_lo", "u8"),
        ("tunnel_dst_hi", "u8"),
        ("tunnel_dst_lo", "u8"),
        ("flow_id", "u8"),
        ("start_ns", "i8"),  # first packet of the flow
        ("first_ns", "i8"),  # first packet of the current record period (0: none yet)
        ("last_ns", "i8"),  # last packet of the flow
        ("period_end_ns", "i8"),  # end of the current record period (aligned)
        ("second_end_ns", "i8"),  # end of the current 1-second edge bucket
        # Handshake times, each reused once spent (read through _kernels.server_rtt_ns / client_rtt_ns):
        ("hs_server_ns", "i8"),  # latest SYN while hs_state <= HS_SYN (0: none), then the server RTT
        ("hs_client_ns", "i8"),  # latest SYN-ACK while hs_state == HS_SYNACK, then the client RTT
        ("tunnel_id", "u4"),
        ("hash", "u4"),
        ("syn_count", "u2"),
        ("synack_count", "u2"),
        ("client_port", "u2"),
        ("server_port", "u2"),
        ("vlan", "u2"),
        ("interface", "u2"),
        ("record_seq", "u2"),
        ("proto", "u1"),
        ("ip_ver", "u1"),
        ("tunnel_type", "u1"),
        ("side_rule", "u1"),
        ("hs_state", "u1"),  # HS_*
        ("close_type", "u1"),  # CLOSE_* once decided (0 while open)
        ("fin_mask", "u1"),  # bit 0: client FIN, bit 1: server FIN
        ("seen_mask", "u1"),  # bit 0: a packet from the client was seen, bit 1: from the server
        ("pending", "u1"),  # not yet reported in an edge delta: PENDING_OPENED, PENDING_RTT
    ],
    align=True,
)

DIR_STATE_DTYPE = np.dtype(
    [
        ("packets", "u8"),  # since the last record
        ("bytes", "u8"),
        ("l2_bytes", "u8"),
        ("payload_bytes", "u8"),
        ("nextseq_ns", "i8"),  # time the highest sequence was seen
        ("lastack_ns", "i8"),
        ("mac_lo", "u4"),  # the sender's MAC (48 bits): low 32 bits, high 16 bits in mac_hi (mac_of)
        # Since the last edge delta. Narrower than the record's counters: a delta is emitted early, within its
        # bucket, before one would overflow (the deltas of a bucket are summed downstream: same edges).
        ("sec_packets", "u4"),
        ("sec_bytes", "u4"),
        ("nextseq", "u4"),
        ("lastack", "u4"),
        ("retrans", "u4"),
        ("zero_window", "u4"),
        ("ooo", "u4"),
        ("mac_hi", "u2"),
        ("window", "u2"),  # the TCP header's window field (16 bits, unscaled)
        ("sec_retrans", "u1"),
        ("dupacks", "u1"),  # stops at 255 (only >= 2 matters)
        ("tcp_flags", "u1"),
        ("last_seg", "u1"),  # LAST_SEG_*: what the last segment of this direction was
    ],
    align=True,
)

LAST_SEG_NONE = 0  #: no segment yet (so its ack and window are unknown)
LAST_SEG_PLAIN = 1
LAST_SEG_KEEPALIVE = 2
LAST_SEG_ZERO_WINDOW_PROBE = 3

#: One edge delta: what one flow added to one 1-second bucket. Aggregated by the meter wrapper.
EDGE_DELTA_DTYPE = np.dtype(
    [
        ("second_ns", "i8"),
        ("client_hi", "u8"),
        ("client_lo", "u8"),
        ("server_hi", "u8"),
        ("server_lo", "u8"),
        ("packets_c2s", "u8"),
        ("packets_s2c", "u8"),
        ("bytes_c2s", "u8"),
        ("bytes_s2c", "u8"),
        ("rtt_sum_us", "f8"),
        ("retrans", "u4"),
        ("tunnel_id", "u4"),
        ("server_port", "u2"),
        ("vlan", "u2"),
        ("interface", "u2"),
        ("rtt_count", "u2"),
        ("flows_opened", "u2"),
        ("flows_closed", "u2"),
        ("flows_failed", "u2"),
        ("proto", "u1"),
    ],
    align=True,
)

HS_NONE = 0  #: no handshake packet seen (mid-stream or not TCP)
HS_SYN = 1  #: client SYN seen
HS_SYNACK = 2  #: server SYN-ACK seen
HS_ESTABLISHED = 3  #: client ACK after SYN-ACK seen

PENDING_OPENED = 1  #: ``pending`` bit: the flow's open is not yet reported in an edge delta
PENDING_RTT = 2  #: ``pending`` bit: the handshake RTT is measured but not yet reported in an edge delta

# Meter statistics vector (int64), indexed by these constants.
ST_PACKETS = 0  #: rows offered to the meter
ST_METERED = 1  #: rows counted into a flow
ST_NOT_METERED = 2  #: rows not meterable (not IP, malformed, unknown link type)
ST_TABLE_FULL_PACKETS = 3  #: meterable rows dropped because no slot was free
ST_TABLE_FULL_BYTES = 4  #: their wire bytes
ST_FLOWS_CREATED = 5
ST_RECORDS = 6  #: flow records emitted
ST_EDGE_DELTAS = 7
ST_ACTIVE = 8  #: active flows now
ST_PEAK_ACTIVE = 9
ST_GROW = 10  #: set by the kernel: the table is full but may grow (the wrapper grows it and calls again)
ST_NOW_NS = 11  #: the meter's clock (highest timestamp seen)
ST_NEXT_SCAN_NS = 12
ST_NEXT_FLOW_ID = 13
ST_SIZE = 16
STAT_NAMES = (
    "packets",
    "metered",
    "not_metered",
    "table_full_packets",
    "table_full_bytes",
    "flows_created",
    "records",
    "edge_deltas",
    "active_flows",
    "peak_active_flows",
)

# cfg vector ------------------------------------------------------------------------------------
CFG_IDLE_NS = 0  #: idle timeout: UDP, ICMP, other, and TCP before establishment
CFG_TCP_IDLE_NS = 1  #: idle timeout of established TCP
CFG_LINGER_NS = 2  #: how long a closed TCP flow waits for stragglers
CFG_PERIOD_NS = 3  #: periodic record interval (aligned to multiples of it)
CFG_SCAN_NS = 4  #: how often (packet time) the table is scanned for expiry
CFG_EDGE_NS = 5  #: edge delta bucket (1 s)
CFG_KEY_INTERFACE = 6  #: 1: the capture interface is part of the flow key (agent), 0: it is not (files)
CFG_MAX_FLOWS = 7  #: the table may grow up to this many slots
CFG_SIZE = 8

# st vector slots used only here ---------------------------------------------------------------
ST_OUT_N = 14
ST_EDGE_N = 15
# scan cursor lives in a separate 1-element array ``cursor`` (index into ``active``; -1 idle)

_TCP = 6
_ICMP = 1
_ICMPV6 = 58
_SYN = 0x02
_ACK = 0x10
_RST = 0x04
_FIN = 0x01
_STATUS_OK = 0
_STATUS_TRUNCATED = 2
_HEADROOM = 4  # a packet emits at most 2 records and 3 edge deltas
_U32_MAX = np.uint64(0xFFFF_FFFF)
_U8_MAX = 0xFF
_MAC_LO = np.uint64(0xFFFF_FFFF)

"""The flow record: one row per flow per reporting period. The single source of field names.

The numpy dtype (``FLOW_DTYPE``), the Arrow/jsonl/CSV output, and (later) the wire format and the
ClickHouse columns all come from ``FLOW_FIELDS``. Addresses are stored as two ``uint64`` halves in
the arrays (see :mod:`cloudtap.schema.packet`) and rendered as text (``client_ip``...) on output.

Direction: ``c2s`` is client to server. How the client was chosen is in ``side_rule``; see
``docs/flow-semantics.md``.
"""

from __future__ import annotations

import numpy as np

# close_type values ---------------------------------------------------------------------------
CLOSE_ONGOING = 0  #: periodic record of a flow that continues
CLOSE_FIN = 1  #: FIN seen from both sides (or FIN then idle): normal close
CLOSE_CLIENT_RST = 2  #: client sent RST
CLOSE_SERVER_RST = 3  #: server sent RST after the connection was established
CLOSE_SYN_UNANSWERED = 4  #: only SYN(s) from the client, nothing back
CLOSE_SERVER_REFUSED = 5  #: server answered the SYN with RST (port closed)
CLOSE_HALF_OPEN = 6  #: SYN/SYN-ACK seen, the handshake never completed, then idle
CLOSE_TIMEOUT = 7  #: idle timeout (UDP/ICMP/other, or established TCP that went quiet)
CLOSE_FORCED = 8  #: end of input / agent shutdown while the flow was open
CLOSE_NAMES = (
    "ongoing",
    "fin",
    "client_rst",
    "server_rst",
    "syn_unanswered",
    "server_refused",
    "half_open",
    "timeout",
    "forced_end",
)

# side_rule values: how client and server were chosen ------------------------------------------
SIDE_HANDSHAKE = 1  #: sender of the SYN (or receiver of the SYN-ACK) is the client
SIDE_PORT = 2  #: well-known / ephemeral port rule
SIDE_FIRST_PACKET = 3  #: sender of the first packet seen is the client
SIDE_NAMES = ("", "handshake", "port", "first_packet")

FLOW_FIELDS: tuple[tuple[str, str, str], ...] = (
    # name, numpy type, meaning
    ("flow_id", "u8", "id of the flow, equal on every periodic record of one flow"),
    ("start_ns", "i8", "first packet of the whole flow, ns since the Unix epoch"),
    ("first_ns", "i8", "first packet of this record's period"),
    ("last_ns", "i8", "last packet of this record's period"),
    ("client_hi", "u8", "client IP, upper 64 bits"),
    ("client_lo", "u8", "client IP, lower 64 bits (IPv4 mapped)"),
    ("server_hi", "u8", "server IP, upper 64 bits"),
    ("server_lo", "u8", "server IP, lower 64 bits (IPv4 mapped)"),
    ("tunnel_src_hi", "u8", "outer source IP of the innermost tunnel (first packet), upper 64 bits"),
    ("tunnel_src_lo", "u8", "outer source IP of the innermost tunnel (first packet), lower 64 bits"),
    ("tunnel_dst_hi", "u8", "outer destination IP of the innermost tunnel, upper 64 bits"),
    ("tunnel_dst_lo", "u8", "outer destination IP of the innermost tunnel, lower 64 bits"),
    ("client_mac", "u8", "client-side MAC (source MAC of its packets), 0 when not Ethernet"),
    ("server_mac", "u8", "server-side MAC"),
    ("packets_c2s", "u8", "packets client to server"),
    ("packets_s2c", "u8", "packets server to client"),
    ("bytes_c2s", "u8", "IP bytes client to server (IP total length of the innermost packet)"),
    ("bytes_s2c", "u8", "IP bytes server to client"),
    (
        "l2_bytes_c2s",
        "u8",
        "frame bytes on the wire client to server (pcap orig_len, outer headers included)",
    ),
    ("l2_bytes_s2c", "u8", "frame bytes on the wire server to client"),
    ("payload_bytes_c2s", "u8", "L4 payload bytes client to server"),
    ("payload_bytes_s2c", "u8", "L4 payload bytes server to client"),
    ("rtt_client_us", "f8", "handshake RTT, client half: SYN-ACK to ACK, microseconds; -1 unknown"),
    ("rtt_server_us", "f8", "handshake RTT, server half: SYN to SYN-ACK, microseconds; -1 unknown"),
    ("retrans_c2s", "u4", "TCP retransmitted segments client to server (segments with payload or SYN/FIN)"),
    ("retrans_s2c", "u4", "TCP retransmitted segments server to client"),
    ("zero_window_c2s", "u4", "TCP segments advertising a zero window, client to server"),
    ("zero_window_s2c", "u4", "TCP segments advertising a zero window, server to client"),
    (
        "ooo_c2s",
        "u4",
        "TCP out-of-order segments client to server (sequence below the highest seen, not a retransmission)",
    ),
    ("ooo_s2c", "u4", "TCP out-of-order segments server to client"),
    ("tunnel_id", "u4", "VNI / GRE key / ERSPAN session id (part of the flow key)"),
    ("syn_count", "u2", "SYN (without ACK) segments from the client; retries = syn_count - 1"),
    ("synack_count", "u2", "SYN-ACK segments from the server"),
    ("client_port", "u2", "client port (ICMP echo: identifier)"),
    ("server_port", "u2", "server port (ICMP: type<<8|code of the first packet, echo: identifier)"),
    ("vlan", "u2", "VLAN id (part of the flow key)"),
    (
        "interface",
        "u2",
        "observation point: capture interface index (part of the key when the meter keys by interface, else where the flow was first seen)",
    ),
    ("record_seq", "u2", "0 for the first record of a flow, then 1, 2... for each periodic record"),
    ("proto", "u1", "IP protocol number"),
    ("ip_ver", "u1", "4 or 6"),
    ("tcp_flags_c2s", "u1", "OR of TCP flags client to server"),
    ("tcp_flags_s2c", "u1", "OR of TCP flags server to client"),
    ("tunnel_type", "u1", "innermost tunnel type (see schema.packet.TUNNEL_*)"),
    ("close_type", "u1", "how the flow ended (CLOSE_*); ongoing for periodic records"),
    ("side_rule", "u1", "how client and server were chosen (SIDE_*)"),
    # application requests (docs/requests.md, "Counts on flow records"); 0 when no request parser ran
    (
        "requests",
        "u4",
        "application requests on this flow concluded in this record's period (answered, timed out or unanswered)",
    ),
    ("request_errors", "u4", "of those: client_error + server_error + timeout + unanswered"),
    ("requests_answered", "u4", "of those: requests with a response"),
    ("request_latency_sum_us", "u8", "sum of latency_us of the answered requests, microseconds"),
)

FLOW_DTYPE = np.dtype([(name, typ) for name, typ, _ in FLOW_FIELDS], align=True)

#: Fields that are counters summed across periodic records.
FLOW_COUNTERS: tuple[str, ...] = (
    "packets_c2s",
    "packets_s2c",
    "bytes_c2s",
    "bytes_s2c",
    "l2_bytes_c2s",
    "l2_bytes_s2c",
    "payload_bytes_c2s",
    "payload_bytes_s2c",
    "retrans_c2s",
    "retrans_s2c",
    "zero_window_c2s",
    "zero_window_s2c",
    "ooo_c2s",
    "ooo_s2c",
    "syn_count",
    "synack_count",
)


def empty_flows(n: int) -> np.ndarray:
    """Return a zeroed array of ``n`` flow records."""
    return np.zeros(n, dtype=FLOW_DTYPE)

"""The IPFIX information elements cloudtap exports, in record order: the single source of the templates.

Each row is one field of a data record: (name, element id, enterprise number, length, flow field,
meaning). Enterprise 0 is IANA; :data:`REVERSE_PEN` (29305, RFC 5103) marks the reverse direction of
an IANA element (same id); :data:`CLOUDTAP_PEN` marks cloudtap's own elements (docs/ipfix.md).

The numba encoder (``_kernels.py``) writes the fields in exactly this order and these lengths; the
tests decode its output with the templates built here, so the two cannot drift silently.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

#: RFC 5103 reverse information elements: the IANA element id under this private enterprise number.
REVERSE_PEN = 29305
#: cloudtap's enterprise elements. 32473 is the number IANA reserves for documentation (RFC 5612):
#: cloudtap has no number of its own yet; collectors treat these elements as opaque enterprise fields.
CLOUDTAP_PEN = 32473
#: Template ids of the two data record layouts.
TEMPLATE_V4, TEMPLATE_V6 = 256, 257
IPFIX_VERSION = 10
MESSAGE_HEADER_LEN, SET_HEADER_LEN = 16, 4
TEMPLATE_SET_ID = 2


class Element(NamedTuple):
    """One field of a data record."""

    name: str
    element_id: int
    enterprise: int
    length: int
    field: str  #: FLOW_DTYPE field it comes from (after conversion, see docs/ipfix.md)
    meaning: str


# fmt: off
_HEAD: tuple[Element, ...] = (
    Element("flowStartMilliseconds", 152, 0, 8, "first_ns", "first packet of this record's period (ms)"),
    Element("flowEndMilliseconds", 153, 0, 8, "last_ns", "last packet of this record's period (ms)"),
    Element("octetDeltaCount", 1, 0, 8, "bytes_c2s", "IP bytes client to server"),
    Element("packetDeltaCount", 2, 0, 8, "packets_c2s", "packets client to server"),
    Element("reverseOctetDeltaCount", 1, REVERSE_PEN, 8, "bytes_s2c", "IP bytes server to client"),
    Element("reversePacketDeltaCount", 2, REVERSE_PEN, 8, "packets_s2c", "packets server to client"),
    Element("layer2OctetDeltaCount", 352, 0, 8, "l2_bytes_c2s", "frame bytes client to server"),
    Element("reverseLayer2OctetDeltaCount", 352, REVERSE_PEN, 8, "l2_bytes_s2c", "frame bytes server to client"),
)
_V4_ADDRESSES: tuple[Element, ...] = (
    Element("sourceIPv4Address", 8, 0, 4, "client_lo", "client address"),
    Element("destinationIPv4Address", 12, 0, 4, "server_lo", "server address"),
)
_V6_ADDRESSES: tuple[Element, ...] = (
    Element("sourceIPv6Address", 27, 0, 16, "client_hi,client_lo", "client address"),
    Element("destinationIPv6Address", 28, 0, 16, "server_hi,server_lo", "server address"),
)
_TAIL: tuple[Element, ...] = (
    Element("ingressInterface", 10, 0, 4, "interface", "observation point (capture interface index)"),
    Element("sourceTransportPort", 7, 0, 2, "client_port", "client port (ICMP echo: identifier)"),
    Element("destinationTransportPort", 11, 0, 2, "server_port", "server port (ICMP: type<<8|code)"),
    Element("vlanId", 58, 0, 2, "vlan", "VLAN id (0: untagged)"),
    Element("tcpControlBits", 6, 0, 2, "tcp_flags_c2s", "OR of TCP flags client to server"),
    Element("reverseTcpControlBits", 6, REVERSE_PEN, 2, "tcp_flags_s2c", "OR of TCP flags server to client"),
    Element("protocolIdentifier", 4, 0, 1, "proto", "IP protocol number"),
    Element("flowEndReason", 136, 0, 1, "close_type", "1 idle, 2 active (periodic record), 3 end detected, 4 forced"),
    Element("cloudtapFlowId", 1, CLOUDTAP_PEN, 8, "flow_id", "id of the flow, equal on all its records"),
    Element("cloudtapFlowOriginNanoseconds", 2, CLOUDTAP_PEN, 8, "start_ns", "first packet of the whole flow (ns)"),
    Element("cloudtapRttClientMicroseconds", 3, CLOUDTAP_PEN, 8, "rtt_client_us",
            "handshake RTT client half (SYN-ACK to ACK), float64 µs, -1 unknown"),
    Element("cloudtapRttServerMicroseconds", 4, CLOUDTAP_PEN, 8, "rtt_server_us",
            "handshake RTT server half (SYN to SYN-ACK), float64 µs, -1 unknown"),
    Element("cloudtapRetransmissions", 5, CLOUDTAP_PEN, 4, "retrans_c2s", "TCP retransmitted segments c2s"),
    Element("cloudtapReverseRetransmissions", 6, CLOUDTAP_PEN, 4, "retrans_s2c", "TCP retransmitted segments s2c"),
    Element("cloudtapZeroWindows", 7, CLOUDTAP_PEN, 4, "zero_window_c2s", "TCP zero-window segments c2s"),
    Element("cloudtapReverseZeroWindows", 8, CLOUDTAP_PEN, 4, "zero_window_s2c", "TCP zero-window segments s2c"),
    Element("cloudtapOutOfOrder", 9, CLOUDTAP_PEN, 4, "ooo_c2s", "TCP out-of-order segments c2s"),
    Element("cloudtapReverseOutOfOrder", 10, CLOUDTAP_PEN, 4, "ooo_s2c", "TCP out-of-order segments s2c"),
    Element("cloudtapSynCount", 11, CLOUDTAP_PEN, 2, "syn_count", "SYN segments from the client"),
    Element("cloudtapSynAckCount", 12, CLOUDTAP_PEN, 2, "synack_count", "SYN-ACK segments from the server"),
    Element("cloudtapRecordSequence", 13, CLOUDTAP_PEN, 2, "record_seq", "0, 1, 2... per record of one flow"),
    Element("cloudtapCloseType", 14, CLOUDTAP_PEN, 1, "close_type", "cloudtap close type (CLOSE_* code)"),
    Element("cloudtapSideRule", 15, CLOUDTAP_PEN, 1, "side_rule", "how the client was chosen (SIDE_* code)"),
)
# fmt: on

#: Data record fields of the IPv4 and the IPv6 template.
ELEMENTS_V4: tuple[Element, ...] = _HEAD + _V4_ADDRESSES + _TAIL
ELEMENTS_V6: tuple[Element, ...] = _HEAD + _V6_ADDRESSES + _TAIL
RECORD_LEN_V4 = sum(e.length for e in ELEMENTS_V4)
RECORD_LEN_V6 = sum(e.length for e in ELEMENTS_V6)

#: cloudtap close type → IPFIX flowEndReason (RFC 7011 §5.11 / IANA): 1 idle timeout, 2 active
#: timeout (a periodic record of a flow that goes on), 3 end of flow detected (FIN, RST, refused),
#: 4 forced end (end of input, agent shutdown).
FLOW_END_REASON = (2, 3, 3, 3, 1, 3, 1, 1, 4)


def template_record(template_id: int, elements: tuple[Element, ...]) -> bytes:
    """One template record: id, field count, then each field specifier (enterprise bit when PEN != 0)."""
    out = bytearray(struct.pack("!HH", template_id, len(elements)))
    for e in elements:
        if e.enterprise:
            out += struct.pack("!HHI", 0x8000 | e.element_id, e.length, e.enterprise)
        else:
            out += struct.pack("!HH", e.element_id, e.length)
    return bytes(out)


def template_set() -> bytes:
    """The template set announcing both layouts (IPv4 then IPv6)."""
    body = template_record(TEMPLATE_V4, ELEMENTS_V4) + template_record(TEMPLATE_V6, ELEMENTS_V6)
    return struct.pack("!HH", TEMPLATE_SET_ID, SET_HEADER_LEN + len(body)) + body

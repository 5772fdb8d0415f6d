"""The state the reference meter keeps per flow: one :class:`Flow`, its two :class:`Side` s and handshake progress.

Plain dataclasses, one per flow in a dict (see :mod:`cloudtap.meter.reference`); the numba meter keeps the
same state in the structured arrays of ``meter/_state.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Handshake progress (``Flow.hs``).
NO_HS, SAW_SYN, SAW_SYNACK, ESTABLISHED = 0, 1, 2, 3


@dataclass
class Side:
    """One direction of a flow: counters of the current record and Wireshark-style TCP state."""

    packets: int = 0
    bytes: int = 0
    l2_bytes: int = 0
    payload_bytes: int = 0
    retrans: int = 0
    zero_window: int = 0
    ooo: int = 0
    tcp_flags: int = 0
    mac: int = 0
    # sequence analysis (0 = unknown, as in Wireshark)
    nextseq: int = 0
    nextseq_ns: int = 0
    lastack: int = 0
    lastack_ns: int = 0
    window: int | None = None
    dupacks: int = 0
    last_keepalive: bool = False

    def reset_record(self) -> None:
        self.packets = self.bytes = self.l2_bytes = self.payload_bytes = 0
        self.retrans = self.zero_window = self.ooo = 0
        self.tcp_flags = 0


@dataclass
class Flow:
    flow_id: int
    key: tuple[Any, ...]
    client: tuple[int, int, int]  # hi, lo, port
    server: tuple[int, int, int]
    proto: int
    vlan: int
    tunnel_id: int
    tunnel_type: int
    tunnel: tuple[int, int, int, int]
    ip_ver: int
    interface: int  # where the flow was first seen
    side_rule: int
    start_ns: int
    last_ns: int
    period: int  # start of the current record period
    second: int  # start of the current edge bucket
    sides: tuple[Side, Side] = field(default_factory=lambda: (Side(), Side()))
    first_ns: int | None = None  # first packet of the current record period
    record_seq: int = 0
    syn_count: int = 0
    synack_count: int = 0
    hs: int = NO_HS
    syn_ns: int | None = None
    synack_ns: int | None = None
    rtt_client_ns: int | None = None
    rtt_server_ns: int | None = None
    rst_close: int = 0
    fin_mask: int = 0
    s2c_total: int = 0  # server-to-client packets over the whole flow

    @property
    def closed(self) -> bool:
        """FIN both ways or RST: waits ``close_linger`` for stragglers, a new SYN starts a new flow."""
        return self.rst_close != 0 or self.fin_mask == 3

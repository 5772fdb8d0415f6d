"""The slow twin of the flow meter: ``docs/flow-semantics.md`` written plainly in Python.

One dict of flows, one loop per packet, no numba. It shares nothing with the kernels but the schema
constants and dtypes, so the tests can hold the fast meter to it record for record. Use it for tests
and for explaining a number, never for real traffic (it meters ~70k packets/s; the meter ~4M).

Streaming choices it makes, as the meter does: the clock is the highest timestamp seen; the table is
scanned for expiry and due periodic records whenever a packet moves the clock into a new
``scan_interval``; a packet counts in its flow's current record period and edge second (a late packet
whose timestamp belongs to an earlier one is not back-dated); a flow's close is reported in the last
edge second the flow was in (by a packet or a scan) before it ended.

``emulate`` switches on the meter kernel's known deviations from the document (see
:data:`KERNEL_QUIRKS`), so the equivalence tests stay exact while a deviation is open.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import numpy as np

from cloudtap.meter._state import EDGE_DELTA_DTYPE
from cloudtap.meter.config import MeterConfig
from cloudtap.meter.reference_flow import ESTABLISHED, NO_HS, SAW_SYN, SAW_SYNACK, Flow
from cloudtap.meter.reference_tcp import analyse_sequence
from cloudtap.schema.flow import (
    CLOSE_CLIENT_RST,
    CLOSE_FIN,
    CLOSE_FORCED,
    CLOSE_HALF_OPEN,
    CLOSE_ONGOING,
    CLOSE_SERVER_REFUSED,
    CLOSE_SERVER_RST,
    CLOSE_SYN_UNANSWERED,
    CLOSE_TIMEOUT,
    FLOW_DTYPE,
    SIDE_FIRST_PACKET,
    SIDE_HANDSHAKE,
    SIDE_PORT,
)
from cloudtap.schema.packet import (
    FLAG_L4,
    PROTO_ICMP,
    PROTO_ICMPV6,
    PROTO_TCP,
    STATUS_OK,
    STATUS_TRUNCATED,
    TCP_ACK,
    TCP_FIN,
    TCP_RST,
    TCP_SYN,
)

#: Known deviations of the numba kernel from docs/flow-semantics.md, by name (see ``emulate``).
KERNEL_QUIRKS: dict[str, str] = {}

_NS = 1_000_000_000


def _port_rank(port: int) -> int:
    return 0 if port < 1024 else (1 if port < 32768 else 2)


class _Reference:
    def __init__(self, config: MeterConfig, emulate: Collection[str]) -> None:
        unknown = set(emulate) - set(KERNEL_QUIRKS)
        if unknown:
            raise ValueError(f"unknown kernel quirks: {sorted(unknown)}")
        self.q = frozenset(emulate)
        self.idle = int(config.idle_timeout_s * _NS)
        self.tcp_idle = int(config.tcp_idle_timeout_s * _NS)
        self.linger = int(config.close_linger_s * _NS)
        self.period_ns = int(config.record_interval_s * _NS)
        self.scan_ns = int(config.scan_interval_s * _NS)
        self.edge_ns = int(config.edge_interval_s * _NS)
        self.max_flows = config.max_flows
        self.by_interface = config.key_by_interface
        self.next_id = config.flow_id_base
        self.flows: dict[tuple[Any, ...], Flow] = {}
        self.now: int | None = None
        self.next_scan = 0
        self.records: list[dict[str, Any]] = []
        self.edges: dict[tuple[int, int], dict[str, Any]] = {}  # (flow_id, second) -> sums
        self.stats = dict.fromkeys(
            ("packets", "metered", "not_metered", "table_full_packets", "table_full_bytes",
             "flows_created", "records"), 0,
        )  # fmt: skip

    # -- edges ---------------------------------------------------------------------------------
    def _edge(self, f: Flow) -> dict[str, Any]:
        slot = self.edges.get((f.flow_id, f.second))
        if slot is None:
            slot = {
                "second_ns": f.second, "client": f.client, "server": f.server, "proto": f.proto,
                "vlan": f.vlan, "tunnel_id": f.tunnel_id, "interface": f.interface,
                "packets_c2s": 0, "packets_s2c": 0,
                "bytes_c2s": 0, "bytes_s2c": 0, "retrans": 0, "rtt_sum_us": 0.0, "rtt_count": 0,
                "flows_opened": 0, "flows_closed": 0, "flows_failed": 0,
            }  # fmt: skip
            self.edges[(f.flow_id, f.second)] = slot
        return slot

    def _move_to(self, f: Flow, t: int) -> None:
        """Bring the flow's current record period and edge second up to time ``t``."""
        period = t // self.period_ns * self.period_ns
        if period > f.period:
            if f.first_ns is not None:
                self._record(f, CLOSE_ONGOING)
            f.period = period
        second = t // self.edge_ns * self.edge_ns
        if second > f.second:
            f.second = second

    # -- records -------------------------------------------------------------------------------
    def _record(self, f: Flow, close_type: int) -> None:
        c, s = f.sides
        self.records.append(
            {
                "flow_id": f.flow_id,
                "start_ns": f.start_ns,
                "first_ns": f.first_ns if f.first_ns is not None else f.last_ns,
                "last_ns": f.last_ns,
                "client_hi": f.client[0], "client_lo": f.client[1], "client_port": f.client[2],
                "server_hi": f.server[0], "server_lo": f.server[1], "server_port": f.server[2],
                "tunnel_src_hi": f.tunnel[0], "tunnel_src_lo": f.tunnel[1],
                "tunnel_dst_hi": f.tunnel[2], "tunnel_dst_lo": f.tunnel[3],
                "client_mac": c.mac, "server_mac": s.mac,
                "packets_c2s": c.packets, "packets_s2c": s.packets,
                "bytes_c2s": c.bytes, "bytes_s2c": s.bytes,
                "l2_bytes_c2s": c.l2_bytes, "l2_bytes_s2c": s.l2_bytes,
                "payload_bytes_c2s": c.payload_bytes, "payload_bytes_s2c": s.payload_bytes,
                "rtt_client_us": -1.0 if f.rtt_client_ns is None else f.rtt_client_ns / 1000.0,
                "rtt_server_us": -1.0 if f.rtt_server_ns is None else f.rtt_server_ns / 1000.0,
                "retrans_c2s": c.retrans, "retrans_s2c": s.retrans,
                "zero_window_c2s": c.zero_window, "zero_window_s2c": s.zero_window,
                "ooo_c2s": c.ooo, "ooo_s2c": s.ooo,
                "tunnel_id": f.tunnel_id, "syn_count": f.syn_count, "synack_count": f.synack_count,
                "vlan": f.vlan, "interface": f.interface, "record_seq": f.record_seq, "proto": f.proto,
                "ip_ver": f.ip_ver,
                "tcp_flags_c2s": c.tcp_flags, "tcp_flags_s2c": s.tcp_flags,
                "tunnel_type": f.tunnel_type, "close_type": close_type, "side_rule": f.side_rule,
            }
        )  # fmt: skip
        self.stats["records"] += 1
        f.record_seq += 1
        f.first_ns = None
        f.syn_count = f.synack_count = 0
        c.reset_record()
        s.reset_record()

    def _close_type(self, f: Flow, forced: bool) -> int:
        if f.rst_close:
            return f.rst_close
        if f.proto == PROTO_TCP:
            if f.fin_mask == 3:
                return CLOSE_FIN
            if f.fin_mask and not forced:
                return CLOSE_FIN
            if f.fin_mask == 0:
                if f.hs == SAW_SYN and f.s2c_total == 0:
                    return CLOSE_SYN_UNANSWERED
                if f.hs == SAW_SYNACK:
                    return CLOSE_HALF_OPEN
        return CLOSE_FORCED if forced else CLOSE_TIMEOUT

    def _end(self, f: Flow, forced: bool) -> None:
        close_type = self._close_type(f, forced)
        edge = self._edge(f)
        edge["flows_closed"] += 1
        if close_type in (CLOSE_SYN_UNANSWERED, CLOSE_SERVER_REFUSED, CLOSE_HALF_OPEN):
            edge["flows_failed"] += 1
        self._record(f, close_type)
        del self.flows[f.key]

    def _idle_limit(self, f: Flow) -> int:
        if f.proto != PROTO_TCP:
            return self.idle
        if f.closed:
            return self.linger
        if f.hs in (SAW_SYN, SAW_SYNACK):  # before establishment
            return self.idle
        return self.tcp_idle  # established or mid-stream

    def scan(self, forced: bool) -> None:
        now = self.now if self.now is not None else 0
        for f in list(self.flows.values()):
            if forced or now - f.last_ns >= self._idle_limit(f):
                self._end(f, forced)
            else:
                self._move_to(f, now)

    # -- packets -------------------------------------------------------------------------------
    def _new_flow(self, p: np.void, key: tuple[Any, ...]) -> Flow:
        proto, flags = int(p["proto"]), int(p["tcp_flags"])
        sport, dport = int(p["sport"]), int(p["dport"])
        src = (int(p["src_hi"]), int(p["src_lo"]), sport)
        dst = (int(p["dst_hi"]), int(p["dst_lo"]), dport)
        syn_ack = flags & (TCP_SYN | TCP_ACK)
        if proto == PROTO_TCP and syn_ack == TCP_SYN:
            sender_is_client, rule = True, SIDE_HANDSHAKE
        elif proto == PROTO_TCP and syn_ack == TCP_SYN | TCP_ACK:
            sender_is_client, rule = False, SIDE_HANDSHAKE
        elif proto in (PROTO_ICMP, PROTO_ICMPV6):
            icmp_type = int(p["icmp_type"])
            if icmp_type in (0, 129):  # echo reply
                sender_is_client, rule = False, SIDE_PORT
            elif icmp_type in (8, 128):  # echo request
                sender_is_client, rule = True, SIDE_PORT
            else:  # errors and the rest: client port 0, server port type<<8|code, sender is client
                sender_is_client, rule = True, SIDE_FIRST_PACKET
        elif _port_rank(sport) != _port_rank(dport):
            sender_is_client, rule = _port_rank(sport) > _port_rank(dport), SIDE_PORT
        else:
            sender_is_client, rule = True, SIDE_FIRST_PACKET
        ts = int(p["ts_ns"])
        f = Flow(
            flow_id=self.next_id,
            key=key,
            client=src if sender_is_client else dst,
            server=dst if sender_is_client else src,
            proto=proto,
            vlan=int(p["vlan"]),
            tunnel_id=int(p["tunnel_id"]),
            tunnel_type=int(p["tunnel_type"]),
            tunnel=(int(p["tunnel_src_hi"]), int(p["tunnel_src_lo"]),
                    int(p["tunnel_dst_hi"]), int(p["tunnel_dst_lo"])),
            ip_ver=int(p["ip_ver"]),
            interface=int(p["interface"]),
            side_rule=rule,
            start_ns=ts,
            last_ns=ts,
            period=ts // self.period_ns * self.period_ns,
            second=ts // self.edge_ns * self.edge_ns,
        )  # fmt: skip
        self.next_id += 1
        self.flows[key] = f
        self.stats["flows_created"] += 1
        self._edge(f)["flows_opened"] += 1
        return f

    def packet(self, p: np.void) -> None:
        self.stats["packets"] += 1
        if int(p["ip_ver"]) == 0 or int(p["status"]) not in (STATUS_OK, STATUS_TRUNCATED):
            self.stats["not_metered"] += 1
            return
        ts = int(p["ts_ns"])
        if self.now is None or ts > self.now:
            self.now = ts
            if ts >= self.next_scan:
                first = self.next_scan == 0
                self.next_scan = ts // self.scan_ns * self.scan_ns + self.scan_ns
                if not first:
                    self.scan(forced=False)
        src = (int(p["src_hi"]), int(p["src_lo"]), int(p["sport"]))
        dst = (int(p["dst_hi"]), int(p["dst_lo"]), int(p["dport"]))
        iface = int(p["interface"]) if self.by_interface else 0
        key = (int(p["proto"]), int(p["vlan"]), int(p["tunnel_id"]), iface, min(src, dst), max(src, dst))
        has_l4 = (int(p["flags"]) & FLAG_L4) != 0
        is_tcp = int(p["proto"]) == PROTO_TCP and has_l4
        flags = int(p["tcp_flags"]) if has_l4 else 0
        f = self.flows.get(key)
        if f is not None and is_tcp and flags & (TCP_SYN | TCP_ACK) == TCP_SYN and f.closed:
            self._end(f, forced=False)  # port reuse: a new connection on a closed 5-tuple
            f = None
        if f is None:
            if len(self.flows) >= self.max_flows:
                self.stats["table_full_packets"] += 1
                self.stats["table_full_bytes"] += int(p["wire_len"])
                return
            f = self._new_flow(p, key)
        d = 0 if src == f.client else 1
        self._move_to(f, ts)
        side, other = f.sides[d], f.sides[1 - d]
        side.packets += 1
        side.bytes += int(p["ip_len"])
        side.l2_bytes += int(p["wire_len"])
        side.payload_bytes += int(p["payload_len"])
        if d == 1:
            f.s2c_total += 1
        if side.mac == 0:
            side.mac = int(p["src_mac"])
        if f.first_ns is None or ts < f.first_ns:  # a late packet may carry an earlier time
            f.first_ns = ts
        f.start_ns = min(f.start_ns, ts)
        f.last_ns = max(f.last_ns, ts)
        edge = self._edge(f)
        edge["packets_c2s" if d == 0 else "packets_s2c"] += 1
        edge["bytes_c2s" if d == 0 else "bytes_s2c"] += int(p["ip_len"])
        self.stats["metered"] += 1
        if is_tcp:
            side.tcp_flags |= flags
            self._handshake_and_close(f, d, flags, ts)
            irtt = 0
            if f.rtt_client_ns is not None and f.rtt_server_ns is not None:
                irtt = f.rtt_client_ns + f.rtt_server_ns
            verdict = analyse_sequence(side, other, ts, int(p["tcp_seq"]), int(p["tcp_ack"]), flags,
                               int(p["tcp_win"]), int(p["payload_len"]), irtt)  # fmt: skip
            if verdict == 1:
                side.retrans += 1
                edge["retrans"] += 1
            elif verdict == 2:
                side.ooo += 1

    def _handshake_and_close(self, f: Flow, d: int, flags: int, ts: int) -> None:
        syn, ack = bool(flags & TCP_SYN), bool(flags & TCP_ACK)
        if syn and not ack and d == 0:
            f.syn_count += 1
            if f.hs in (NO_HS, SAW_SYN):
                f.hs = SAW_SYN
                f.syn_ns = ts  # the latest SYN before the SYN-ACK
        elif syn and ack and d == 1:
            f.synack_count += 1
            if f.hs != ESTABLISHED:
                if f.synack_ns is None and f.syn_ns is not None:  # the first SYN-ACK
                    f.rtt_server_ns = ts - f.syn_ns
                f.synack_ns = ts  # a retransmitted SYN-ACK restarts the client half (Argus)
                f.hs = SAW_SYNACK
        elif ack and not syn and d == 0 and f.hs == SAW_SYNACK:
            f.hs = ESTABLISHED
            assert f.synack_ns is not None
            f.rtt_client_ns = ts - f.synack_ns
            if f.rtt_server_ns is not None:
                edge = self._edge(f)
                edge["rtt_sum_us"] += (f.rtt_client_ns + f.rtt_server_ns) / 1000.0
                edge["rtt_count"] += 1
        if flags & TCP_RST and not f.rst_close:
            if d == 0:
                f.rst_close = CLOSE_CLIENT_RST
            elif f.hs == SAW_SYN:
                f.rst_close = CLOSE_SERVER_REFUSED
            else:
                f.rst_close = CLOSE_SERVER_RST
        if flags & TCP_FIN:
            f.fin_mask |= 1 << d


def _to_arrays(ref: _Reference) -> tuple[np.ndarray, np.ndarray]:
    flows = np.zeros(len(ref.records), FLOW_DTYPE)
    for i, rec in enumerate(ref.records):
        for name, value in rec.items():
            flows[i][name] = value
    deltas = np.zeros(len(ref.edges), EDGE_DELTA_DTYPE)
    for i, e in enumerate(ref.edges.values()):
        row = deltas[i]
        row["client_hi"], row["client_lo"] = e["client"][0], e["client"][1]
        row["server_hi"], row["server_lo"], row["server_port"] = e["server"]
        for name in ("second_ns", "proto", "vlan", "tunnel_id", "interface", "packets_c2s", "packets_s2c", "bytes_c2s",
                     "bytes_s2c", "retrans", "rtt_sum_us", "rtt_count", "flows_opened", "flows_closed",
                     "flows_failed"):  # fmt: skip
            row[name] = e[name]
    return flows, deltas


def reference_meter(
    packets: np.ndarray,
    config: MeterConfig,
    *,
    emulate: Collection[str] = (),
    stats: dict[str, int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Meter a whole packet stream (then end every flow, as at end of input), slowly and plainly.

    Args:
        packets: ``PACKET_DTYPE`` rows in capture order.
        config: the same settings the meter takes (``output_batch`` is irrelevant here).
        emulate: names from :data:`KERNEL_QUIRKS` to reproduce the kernel's known deviations.
        stats: if given, filled with packets, metered, not_metered, table_full_packets,
            table_full_bytes, flows_created and records.

    Returns:
        ``(records, edge_deltas)``: ``FLOW_DTYPE`` records in emission order, and
        ``EDGE_DELTA_DTYPE`` deltas, one per flow and edge second it touched.
    """
    ref = _Reference(config, emulate)
    for p in packets:
        ref.packet(p)
    ref.scan(forced=True)
    if stats is not None:
        stats.update(ref.stats)
    return _to_arrays(ref)

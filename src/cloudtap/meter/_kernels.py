"""The metering kernel (numba): decoded packets in, flow records and edge deltas out.

Array contract (allocated and owned by :class:`cloudtap.meter.meter.Meter`):

- ``pk``: ``PACKET_DTYPE[n]`` decoded packets, in capture order.
- ``fs``: ``FLOW_STATE_DTYPE[capacity]``, ``ds``: ``DIR_STATE_DTYPE[2*capacity]`` (see ``_state``).
- ``idx_slot``/``idx_hash``: the hash index (see ``_table``).
- ``free_stack``: ``int32[capacity]`` free slots, top at ``free_top[0]``.
- ``active``/``active_pos``: ``int32[capacity]`` dense list of used slots and each slot's position in it.
- ``st``: ``int64[ST_SIZE]`` statistics and clock (``ST_*``), ``cfg``: ``int64[CFG_SIZE]``.
- ``out``: ``FLOW_DTYPE[m]`` records, filled from ``st[ST_OUT_N]``; ``edges``: ``EDGE_DELTA_DTYPE[m]``.

``meter_packets`` stops early (returning the next row to process) when the output buffers are nearly
full, and when a new flow finds no free slot while the table may still grow (``ST_GROW``); the wrapper
drains or grows, then calls again. Nothing is dropped silently: a packet that finds no free slot in a
table at ``CFG_MAX_FLOWS`` is counted in ``ST_TABLE_FULL_*``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from cloudtap._kernel_opts import KERNEL_OPTS
from cloudtap.meter._state import (
    HS_ESTABLISHED,
    HS_NONE,
    HS_SYN,
    HS_SYNACK,
    PENDING_OPENED,
    PENDING_RTT,
    ST_ACTIVE,
    ST_EDGE_DELTAS,
    ST_FLOWS_CREATED,
    ST_GROW,
    ST_METERED,
    ST_NEXT_FLOW_ID,
    ST_NEXT_SCAN_NS,
    ST_NOT_METERED,
    ST_NOW_NS,
    ST_PACKETS,
    ST_PEAK_ACTIVE,
    ST_RECORDS,
    ST_TABLE_FULL_BYTES,
    ST_TABLE_FULL_PACKETS,
)
from cloudtap.meter._table import flow_hash, index_insert, index_remove
from cloudtap.meter._tcp import analyse_segment
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
    SIDE_FIRST_PACKET,
    SIDE_HANDSHAKE,
    SIDE_PORT,
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


@njit(**KERNEL_OPTS)
def mac_of(r) -> np.uint64:  # type: ignore[no-untyped-def]
    """The sender MAC of direction record ``r`` (0: none seen yet)."""
    return (np.uint64(r.mac_hi) << np.uint64(32)) | np.uint64(r.mac_lo)


@njit(**KERNEL_OPTS)
def server_rtt_ns(f) -> int:  # type: ignore[no-untyped-def]
    """The handshake's server half (SYN to SYN-ACK) of flow record ``f``; negative when unknown."""
    return f.hs_server_ns if f.hs_state >= HS_SYNACK else -1


@njit(**KERNEL_OPTS)
def client_rtt_ns(f) -> int:  # type: ignore[no-untyped-def]
    """The handshake's client half (SYN-ACK to ACK) of flow record ``f``; negative when unknown."""
    return f.hs_client_ns if f.hs_state == HS_ESTABLISHED else -1


@njit(**KERNEL_OPTS)
def _port_rank(port: int) -> int:
    """0 well-known (<1024), 1 registered (<32768), 2 ephemeral."""
    if port < 1024:
        return 0
    if port < 32768:
        return 1
    return 2


@njit(**KERNEL_OPTS)
def _sender_is_client(proto: int, flags: int, sport: int, dport: int, icmp_type: int) -> tuple[bool, int]:
    """Decide from the first packet whether its sender is the client; also return the rule used."""
    if proto == _TCP:
        if (flags & (_SYN | _ACK)) == _SYN:
            return True, SIDE_HANDSHAKE
        if (flags & (_SYN | _ACK)) == (_SYN | _ACK):
            return False, SIDE_HANDSHAKE
    if proto == _ICMP or proto == _ICMPV6:
        if icmp_type == 0 or icmp_type == 129:  # echo reply: the sender is the server
            return False, SIDE_PORT
        return True, SIDE_FIRST_PACKET if icmp_type != 8 and icmp_type != 128 else SIDE_PORT
    rs = _port_rank(sport)
    rd = _port_rank(dport)
    if rs < rd:
        return False, SIDE_PORT
    if rd < rs:
        return True, SIDE_PORT
    return True, SIDE_FIRST_PACKET


@njit(**KERNEL_OPTS)
def _lookup(fs, idx_slot, idx_hash, h, p, iface, by_iface) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """Find the slot of packet ``p``'s flow: (slot, direction) or (-1, 0)."""
    mask = idx_slot.shape[0] - 1
    pos = int(h) & mask
    while True:
        s = idx_slot[pos]
        if s < 0:
            return -1, 0
        if idx_hash[pos] == h:
            f = fs[s]
            if (
                f.proto == p.proto
                and f.vlan == p.vlan
                and f.tunnel_id == p.tunnel_id
                and (not by_iface or f.interface == iface)
            ):
                if (
                    f.client_lo == p.src_lo
                    and f.server_lo == p.dst_lo
                    and f.client_hi == p.src_hi
                    and f.server_hi == p.dst_hi
                    and f.client_port == p.sport
                    and f.server_port == p.dport
                ):
                    return s, 0
                if (
                    f.client_lo == p.dst_lo
                    and f.server_lo == p.src_lo
                    and f.client_hi == p.dst_hi
                    and f.server_hi == p.src_hi
                    and f.client_port == p.dport
                    and f.server_port == p.sport
                ):
                    return s, 1
        pos = (pos + 1) & mask


@njit(**KERNEL_OPTS)
def _create(
    fs, ds, idx_slot, idx_hash, free_stack, free_top, active, active_pos, st, cfg, h, p, iface
) -> int:  # type: ignore[no-untyped-def]
    """Allocate a slot for packet ``p``'s new flow; -1 when the table is full."""
    if free_top[0] == 0:
        return -1
    free_top[0] -= 1
    s = free_stack[free_top[0]]
    ts = p.ts_ns
    is_client, rule = _sender_is_client(p.proto, p.tcp_flags, p.sport, p.dport, p.icmp_type)
    f = fs[s]
    if is_client:
        f.client_hi = p.src_hi
        f.client_lo = p.src_lo
        f.server_hi = p.dst_hi
        f.server_lo = p.dst_lo
        f.client_port = p.sport
        f.server_port = p.dport
    else:
        f.client_hi = p.dst_hi
        f.client_lo = p.dst_lo
        f.server_hi = p.src_hi
        f.server_lo = p.src_lo
        f.client_port = p.dport
        f.server_port = p.sport
    f.tunnel_src_hi = p.tunnel_src_hi
    f.tunnel_src_lo = p.tunnel_src_lo
    f.tunnel_dst_hi = p.tunnel_dst_hi
    f.tunnel_dst_lo = p.tunnel_dst_lo
    f.tunnel_id = p.tunnel_id
    f.tunnel_type = p.tunnel_type
    f.proto = p.proto
    f.ip_ver = p.ip_ver
    f.vlan = p.vlan
    f.interface = p.interface
    f.hash = h
    f.flow_id = np.uint64(st[ST_NEXT_FLOW_ID])
    st[ST_NEXT_FLOW_ID] += 1
    f.start_ns = ts
    f.first_ns = 0
    f.last_ns = ts
    period = cfg[3]
    f.period_end_ns = (ts // period) * period + period
    edge = cfg[5]
    f.second_end_ns = (ts // edge) * edge + edge
    f.hs_server_ns = 0
    f.hs_client_ns = 0
    f.syn_count = 0
    f.synack_count = 0
    f.record_seq = 0
    f.side_rule = rule
    f.hs_state = HS_NONE
    f.close_type = 0
    f.fin_mask = 0
    f.seen_mask = 0
    f.pending = PENDING_OPENED
    for d in range(2):
        r = ds[2 * s + d]
        r.packets = 0
        r.bytes = 0
        r.l2_bytes = 0
        r.payload_bytes = 0
        r.mac_lo = 0
        r.mac_hi = 0
        r.nextseq_ns = 0
        r.lastack_ns = 0
        r.sec_packets = 0
        r.sec_bytes = 0
        r.nextseq = 0
        r.lastack = 0
        r.window = 0
        r.retrans = 0
        r.zero_window = 0
        r.ooo = 0
        r.sec_retrans = 0
        r.dupacks = 0
        r.tcp_flags = 0
        r.last_seg = 0
    index_insert(idx_slot, idx_hash, h, s)
    n = st[ST_ACTIVE]
    active[n] = s
    active_pos[s] = n
    st[ST_ACTIVE] = n + 1
    if n + 1 > st[ST_PEAK_ACTIVE]:
        st[ST_PEAK_ACTIVE] = n + 1
    st[ST_FLOWS_CREATED] += 1
    return s


@njit(**KERNEL_OPTS)
def _release(fs, idx_slot, idx_hash, free_stack, free_top, active, active_pos, st, s) -> None:  # type: ignore[no-untyped-def]
    """Return slot ``s`` to the free list and drop it from the index and the active list."""
    index_remove(idx_slot, idx_hash, fs[s].hash, s)
    pos = active_pos[s]
    last = st[ST_ACTIVE] - 1
    moved = active[last]
    active[pos] = moved
    active_pos[moved] = pos
    st[ST_ACTIVE] = last
    free_stack[free_top[0]] = s
    free_top[0] += 1


@njit(**KERNEL_OPTS)
def _emit_record(fs, ds, s, close_type, out, st) -> None:  # type: ignore[no-untyped-def]
    """Write the current period of slot ``s`` as a flow record and reset the period counters."""
    k = st[ST_OUT_N]
    st[ST_OUT_N] = k + 1
    st[ST_RECORDS] += 1
    f = fs[s]
    o = out[k]
    c = ds[2 * s]
    v = ds[2 * s + 1]
    o.flow_id = f.flow_id
    o.start_ns = f.start_ns
    o.first_ns = f.first_ns if f.first_ns != 0 else f.last_ns
    o.last_ns = f.last_ns
    o.client_hi = f.client_hi
    o.client_lo = f.client_lo
    o.server_hi = f.server_hi
    o.server_lo = f.server_lo
    o.tunnel_src_hi = f.tunnel_src_hi
    o.tunnel_src_lo = f.tunnel_src_lo
    o.tunnel_dst_hi = f.tunnel_dst_hi
    o.tunnel_dst_lo = f.tunnel_dst_lo
    o.client_mac = mac_of(c)
    o.server_mac = mac_of(v)
    o.packets_c2s = c.packets
    o.packets_s2c = v.packets
    o.bytes_c2s = c.bytes
    o.bytes_s2c = v.bytes
    o.l2_bytes_c2s = c.l2_bytes
    o.l2_bytes_s2c = v.l2_bytes
    o.payload_bytes_c2s = c.payload_bytes
    o.payload_bytes_s2c = v.payload_bytes
    rtt_client = client_rtt_ns(f)
    rtt_server = server_rtt_ns(f)
    o.rtt_client_us = rtt_client / 1000.0 if rtt_client >= 0 else -1.0
    o.rtt_server_us = rtt_server / 1000.0 if rtt_server >= 0 else -1.0
    o.retrans_c2s = c.retrans
    o.retrans_s2c = v.retrans
    o.zero_window_c2s = c.zero_window
    o.zero_window_s2c = v.zero_window
    o.ooo_c2s = c.ooo
    o.ooo_s2c = v.ooo
    o.tunnel_id = f.tunnel_id
    o.syn_count = f.syn_count
    o.synack_count = f.synack_count
    o.client_port = f.client_port
    o.server_port = f.server_port
    o.vlan = f.vlan
    o.interface = f.interface
    o.record_seq = f.record_seq
    o.proto = f.proto
    o.ip_ver = f.ip_ver
    o.tcp_flags_c2s = c.tcp_flags
    o.tcp_flags_s2c = v.tcp_flags
    o.tunnel_type = f.tunnel_type
    o.close_type = close_type
    o.side_rule = f.side_rule
    f.record_seq += 1
    f.first_ns = 0
    f.syn_count = 0
    f.synack_count = 0
    for r in (c, v):
        r.packets = 0
        r.bytes = 0
        r.l2_bytes = 0
        r.payload_bytes = 0
        r.retrans = 0
        r.zero_window = 0
        r.ooo = 0
        r.tcp_flags = 0


@njit(**KERNEL_OPTS)
def _emit_edge(fs, ds, s, closed, failed, edges, st, cfg) -> None:  # type: ignore[no-untyped-def]
    """Report what slot ``s`` added to its current 1-second bucket (if anything)."""
    f = fs[s]
    c = ds[2 * s]
    v = ds[2 * s + 1]
    if c.sec_packets == 0 and v.sec_packets == 0 and f.pending == 0 and not closed:
        return
    k = st[ST_EDGE_N]
    st[ST_EDGE_N] = k + 1
    st[ST_EDGE_DELTAS] += 1
    e = edges[k]
    e.second_ns = f.second_end_ns - cfg[5]
    e.client_hi = f.client_hi
    e.client_lo = f.client_lo
    e.server_hi = f.server_hi
    e.server_lo = f.server_lo
    e.packets_c2s = c.sec_packets
    e.packets_s2c = v.sec_packets
    e.bytes_c2s = c.sec_bytes
    e.bytes_s2c = v.sec_bytes
    e.retrans = c.sec_retrans + v.sec_retrans
    e.tunnel_id = f.tunnel_id
    e.server_port = f.server_port
    e.vlan = f.vlan
    e.interface = f.interface
    e.proto = f.proto
    e.flows_opened = 1 if (f.pending & PENDING_OPENED) != 0 else 0
    e.flows_closed = 1 if closed else 0
    e.flows_failed = 1 if failed else 0
    if (f.pending & PENDING_RTT) != 0:
        e.rtt_sum_us = (client_rtt_ns(f) + server_rtt_ns(f)) / 1000.0
        e.rtt_count = 1
    else:
        e.rtt_sum_us = 0.0
        e.rtt_count = 0
    f.pending = 0
    c.sec_packets = 0
    c.sec_bytes = 0
    c.sec_retrans = 0
    v.sec_packets = 0
    v.sec_bytes = 0
    v.sec_retrans = 0


@njit(**KERNEL_OPTS)
def _final_close_type(fs, ds, s, forced) -> int:  # type: ignore[no-untyped-def]
    """How a flow ended, given its TCP state (``forced``: end of input rather than idle)."""
    f = fs[s]
    if f.close_type != 0:
        return f.close_type
    if f.proto == _TCP:
        if f.fin_mask == 3 or (f.fin_mask != 0 and not forced):
            return CLOSE_FIN
        if f.fin_mask != 0:
            return CLOSE_FORCED
        if f.hs_state == HS_SYN and (f.seen_mask & 2) == 0:
            return CLOSE_SYN_UNANSWERED
        if f.hs_state == HS_SYNACK:
            return CLOSE_HALF_OPEN
    return CLOSE_FORCED if forced else CLOSE_TIMEOUT


@njit(**KERNEL_OPTS)
def _finish(
    fs, ds, idx_slot, idx_hash, free_stack, free_top, active, active_pos, st, cfg, out, edges, s, forced
) -> None:  # type: ignore[no-untyped-def]
    """End slot ``s``: final record, final edge delta, free the slot."""
    ct = _final_close_type(fs, ds, s, forced)
    failed = ct == CLOSE_SYN_UNANSWERED or ct == CLOSE_SERVER_REFUSED or ct == CLOSE_HALF_OPEN
    _emit_edge(fs, ds, s, True, failed, edges, st, cfg)
    _emit_record(fs, ds, s, ct, out, st)
    _release(fs, idx_slot, idx_hash, free_stack, free_top, active, active_pos, st, s)


@njit(**KERNEL_OPTS)
def _expired(fs, s, now, cfg) -> bool:  # type: ignore[no-untyped-def]
    f = fs[s]
    idle = now - f.last_ns
    if f.proto == _TCP:
        if f.close_type != 0 or f.fin_mask == 3:
            return idle >= cfg[2]
        if f.hs_state == HS_ESTABLISHED or f.hs_state == HS_NONE:
            return idle >= cfg[1]
    return idle >= cfg[0]


@njit(**KERNEL_OPTS)
def scan(
    fs, ds, idx_slot, idx_hash, free_stack, free_top, active, active_pos, st, cfg, out, edges, cursor, forced
) -> bool:  # type: ignore[no-untyped-def]
    """Expire idle flows, emit due periodic records and edge deltas. Resumable.

    Walks the active list from ``cursor[0]``. Returns True when the walk is complete, False when it
    stopped because an output buffer is nearly full (call again after draining).
    ``forced`` ends every flow (end of input).
    """
    now = st[ST_NOW_NS]
    i = cursor[0]
    if i < 0:
        i = 0
    cap_out = out.shape[0]
    cap_edges = edges.shape[0]
    while i < st[ST_ACTIVE]:
        if st[ST_OUT_N] + _HEADROOM > cap_out or st[ST_EDGE_N] + _HEADROOM > cap_edges:
            cursor[0] = i
            return False
        s = active[i]
        f = fs[s]
        if forced or _expired(fs, s, now, cfg):
            _finish(
                fs,
                ds,
                idx_slot,
                idx_hash,
                free_stack,
                free_top,
                active,
                active_pos,
                st,
                cfg,
                out,
                edges,
                s,
                forced,
            )
            continue  # the last active slot moved into position i
        if now >= f.second_end_ns:
            _emit_edge(fs, ds, s, False, False, edges, st, cfg)
            edge = cfg[5]
            f.second_end_ns = (now // edge) * edge + edge
        if now >= f.period_end_ns:
            if f.first_ns != 0:
                _emit_record(fs, ds, s, CLOSE_ONGOING, out, st)
            period = cfg[3]
            f.period_end_ns = (now // period) * period + period
        i += 1
    cursor[0] = -1
    return True


@njit(**KERNEL_OPTS)
def meter_packets(
    pk,
    start,
    fs,
    ds,
    idx_slot,
    idx_hash,
    free_stack,
    free_top,
    active,
    active_pos,
    st,
    cfg,
    out,
    edges,
    cursor,
) -> int:  # type: ignore[no-untyped-def]
    """Meter rows ``start..`` of ``pk``; return the next row to process (== len(pk) when done)."""
    n = pk.shape[0]
    cap_out = out.shape[0]
    cap_edges = edges.shape[0]
    scan_ns = cfg[4]
    i = start
    if cursor[0] >= 0:  # finish an interrupted scan first
        if not scan(
            fs,
            ds,
            idx_slot,
            idx_hash,
            free_stack,
            free_top,
            active,
            active_pos,
            st,
            cfg,
            out,
            edges,
            cursor,
            False,
        ):
            return i
    while i < n:
        if st[ST_OUT_N] + _HEADROOM > cap_out or st[ST_EDGE_N] + _HEADROOM > cap_edges:
            return i
        p = pk[i]
        st[ST_PACKETS] += 1
        if p.ip_ver == 0 or (p.status != _STATUS_OK and p.status != _STATUS_TRUNCATED):
            st[ST_NOT_METERED] += 1
            i += 1
            continue
        ts = p.ts_ns
        if ts > st[ST_NOW_NS]:
            st[ST_NOW_NS] = ts
            if ts >= st[ST_NEXT_SCAN_NS]:
                if st[ST_NEXT_SCAN_NS] != 0:
                    cursor[0] = 0
                    st[ST_NEXT_SCAN_NS] = (ts // scan_ns) * scan_ns + scan_ns
                    if not scan(
                        fs,
                        ds,
                        idx_slot,
                        idx_hash,
                        free_stack,
                        free_top,
                        active,
                        active_pos,
                        st,
                        cfg,
                        out,
                        edges,
                        cursor,
                        False,
                    ):
                        st[ST_PACKETS] -= 1
                        return i
                else:
                    st[ST_NEXT_SCAN_NS] = (ts // scan_ns) * scan_ns + scan_ns
        iface = p.interface if cfg[6] != 0 else 0
        h = flow_hash(
            p.src_hi, p.src_lo, p.sport, p.dst_hi, p.dst_lo, p.dport, p.proto, p.vlan, p.tunnel_id, iface
        )
        s, d = _lookup(fs, idx_slot, idx_hash, h, p, iface, cfg[6] != 0)
        flags = p.tcp_flags if (p.flags & 8) != 0 else 0
        is_tcp = p.proto == _TCP and (p.flags & 8) != 0
        if s >= 0 and is_tcp and (flags & (_SYN | _ACK)) == _SYN:
            f0 = fs[s]
            if f0.close_type != 0 or f0.fin_mask == 3:
                # A new connection reuses the 5-tuple of a closed one: end the old flow first.
                _finish(
                    fs,
                    ds,
                    idx_slot,
                    idx_hash,
                    free_stack,
                    free_top,
                    active,
                    active_pos,
                    st,
                    cfg,
                    out,
                    edges,
                    s,
                    False,
                )
                s = -1
        if s < 0:
            if free_top[0] == 0 and fs.shape[0] < cfg[CFG_MAX_FLOWS]:
                st[ST_PACKETS] -= 1  # offered again once the wrapper has grown the table
                st[ST_GROW] = 1
                return i
            s = _create(
                fs, ds, idx_slot, idx_hash, free_stack, free_top, active, active_pos, st, cfg, h, p, iface
            )
            if s < 0:
                st[ST_TABLE_FULL_PACKETS] += 1
                st[ST_TABLE_FULL_BYTES] += p.wire_len
                i += 1
                continue
            f = fs[s]
            d = 0 if (f.client_lo == p.src_lo and f.client_hi == p.src_hi and f.client_port == p.sport) else 1
            if f.client_lo == f.server_lo and f.client_hi == f.server_hi and f.client_port == f.server_port:
                d = 0 if f.side_rule != SIDE_HANDSHAKE or (flags & _ACK) == 0 else 1
        f = fs[s]
        if ts >= f.period_end_ns:
            if f.first_ns != 0:
                _emit_record(fs, ds, s, CLOSE_ONGOING, out, st)
            period = cfg[3]
            f.period_end_ns = (ts // period) * period + period
        if ts >= f.second_end_ns:
            _emit_edge(fs, ds, s, False, False, edges, st, cfg)
            edge = cfg[5]
            f.second_end_ns = (ts // edge) * edge + edge
        r = ds[2 * s + d]
        if (
            np.uint64(r.sec_bytes) + np.uint64(p.ip_len) > _U32_MAX
            or np.uint64(r.sec_packets) == _U32_MAX
            or r.sec_retrans == _U8_MAX
        ):
            _emit_edge(fs, ds, s, False, False, edges, st, cfg)  # early, so the narrow counters never wrap
        f.seen_mask |= 1 << d
        r.packets += 1
        r.bytes += p.ip_len
        r.l2_bytes += p.wire_len
        r.payload_bytes += p.payload_len
        r.sec_packets += 1
        r.sec_bytes += p.ip_len
        if r.mac_lo == 0 and r.mac_hi == 0:
            r.mac_lo = p.src_mac & _MAC_LO
            r.mac_hi = p.src_mac >> np.uint64(32)
        if f.first_ns == 0 or ts < f.first_ns:
            f.first_ns = ts
        if ts < f.start_ns:
            f.start_ns = ts
        if ts > f.last_ns:
            f.last_ns = ts
        if is_tcp:
            r.tcp_flags |= flags
            _tcp_state(f, d, flags, ts)
            rtt_client = client_rtt_ns(f)
            rtt_server = server_rtt_ns(f)
            irtt = rtt_client + rtt_server if rtt_client >= 0 and rtt_server >= 0 else 0
            analyse_segment(
                ds, 2 * s + d, 2 * s + 1 - d, ts, p.tcp_seq, p.tcp_ack, flags, p.tcp_win, p.payload_len, irtt
            )
        st[ST_METERED] += 1
        i += 1
    return i


@njit(**KERNEL_OPTS)
def _tcp_state(f, d, flags, ts) -> None:  # type: ignore[no-untyped-def]
    """Advance the handshake / close state of flow record ``f`` for a segment in direction ``d``."""
    syn = (flags & _SYN) != 0
    ack = (flags & _ACK) != 0
    if syn and not ack and d == 0:
        f.syn_count += 1
        if f.hs_state <= HS_SYN:
            f.hs_state = HS_SYN
            f.hs_server_ns = ts  # the latest SYN
    elif syn and ack and d == 1:
        f.synack_count += 1
        if f.hs_state <= HS_SYN:  # the first SYN-ACK: the SYN's time becomes the server RTT
            f.hs_server_ns = ts - f.hs_server_ns if f.hs_server_ns != 0 else -1
            f.hs_state = HS_SYNACK
        if f.hs_state == HS_SYNACK:
            f.hs_client_ns = ts  # the client half is timed from the latest SYN-ACK, as Argus does
    elif ack and not syn and d == 0 and f.hs_state == HS_SYNACK:
        f.hs_state = HS_ESTABLISHED
        f.hs_client_ns = ts - f.hs_client_ns  # the SYN-ACK's time becomes the client RTT
        if f.hs_server_ns >= 0:
            f.pending |= PENDING_RTT
    if (flags & _RST) != 0 and f.close_type == 0:
        if d == 0:
            f.close_type = CLOSE_CLIENT_RST
        elif f.hs_state == HS_SYN:
            f.close_type = CLOSE_SERVER_REFUSED
        else:
            f.close_type = CLOSE_SERVER_RST
    if (flags & _FIN) != 0:
        f.fin_mask |= 1 << d

"""What leaves the flow table: flow records, edge deltas, and the expiry scan that ends idle or closed flows.

Array contract: see ``_kernels``. ``scan`` walks ``active`` from ``cursor`` and stops early when the
output buffers are nearly full, so the wrapper can drain them and call again.
"""

from __future__ import annotations

from numba import njit

from cloudtap._kernel_opts import NO_ALLOC_OPTS
from cloudtap.meter._slots import (
    _release,
    client_rtt_ns,
    mac_of,
    server_rtt_ns,
)
from cloudtap.meter._state import (
    _HEADROOM,
    _TCP,
    HS_ESTABLISHED,
    HS_NONE,
    HS_SYN,
    HS_SYNACK,
    PENDING_OPENED,
    PENDING_RTT,
    ST_ACTIVE,
    ST_EDGE_DELTAS,
    ST_EDGE_N,
    ST_NOW_NS,
    ST_OUT_N,
    ST_RECORDS,
)
from cloudtap.schema.flow import (
    CLOSE_FIN,
    CLOSE_FORCED,
    CLOSE_HALF_OPEN,
    CLOSE_ONGOING,
    CLOSE_SERVER_REFUSED,
    CLOSE_SYN_UNANSWERED,
    CLOSE_TIMEOUT,
)


@njit(**NO_ALLOC_OPTS)
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


@njit(**NO_ALLOC_OPTS)
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


@njit(**NO_ALLOC_OPTS)
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


@njit(**NO_ALLOC_OPTS)
def _finish(
    fs, ds, idx_slot, idx_hash, free_stack, free_top, active, active_pos, st, cfg, out, edges, s, forced
) -> None:  # type: ignore[no-untyped-def]
    """End slot ``s``: final record, final edge delta, free the slot."""
    ct = _final_close_type(fs, ds, s, forced)
    failed = ct == CLOSE_SYN_UNANSWERED or ct == CLOSE_SERVER_REFUSED or ct == CLOSE_HALF_OPEN
    _emit_edge(fs, ds, s, True, failed, edges, st, cfg)
    _emit_record(fs, ds, s, ct, out, st)
    _release(fs, idx_slot, idx_hash, free_stack, free_top, active, active_pos, st, s)


@njit(**NO_ALLOC_OPTS)
def _expired(fs, s, now, cfg) -> bool:  # type: ignore[no-untyped-def]
    f = fs[s]
    idle = now - f.last_ns
    if f.proto == _TCP:
        if f.close_type != 0 or f.fin_mask == 3:
            return idle >= cfg[2]
        if f.hs_state == HS_ESTABLISHED or f.hs_state == HS_NONE:
            return idle >= cfg[1]
    return idle >= cfg[0]


@njit(**NO_ALLOC_OPTS)
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

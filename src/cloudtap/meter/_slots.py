"""Flow slots: which side is the client, finding a packet's flow, creating and releasing a slot.

Array contract: see ``_kernels``. ``mac_of`` and the RTT readers decode narrowed state fields.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from cloudtap._kernel_opts import NO_ALLOC_OPTS
from cloudtap.meter._state import (
    _ACK,
    _ICMP,
    _ICMPV6,
    _SYN,
    _TCP,
    HS_ESTABLISHED,
    HS_NONE,
    HS_SYNACK,
    PENDING_OPENED,
    ST_ACTIVE,
    ST_FLOWS_CREATED,
    ST_NEXT_FLOW_ID,
    ST_PEAK_ACTIVE,
)
from cloudtap.meter._table import index_insert, index_remove
from cloudtap.schema.flow import (
    SIDE_FIRST_PACKET,
    SIDE_HANDSHAKE,
    SIDE_PORT,
)


@njit(**NO_ALLOC_OPTS)
def mac_of(r) -> np.uint64:  # type: ignore[no-untyped-def]
    """The sender MAC of direction record ``r`` (0: none seen yet)."""
    return (np.uint64(r.mac_hi) << np.uint64(32)) | np.uint64(r.mac_lo)


@njit(**NO_ALLOC_OPTS)
def server_rtt_ns(f) -> int:  # type: ignore[no-untyped-def]
    """The handshake's server half (SYN to SYN-ACK) of flow record ``f``; negative when unknown."""
    return f.hs_server_ns if f.hs_state >= HS_SYNACK else -1


@njit(**NO_ALLOC_OPTS)
def client_rtt_ns(f) -> int:  # type: ignore[no-untyped-def]
    """The handshake's client half (SYN-ACK to ACK) of flow record ``f``; negative when unknown."""
    return f.hs_client_ns if f.hs_state == HS_ESTABLISHED else -1


@njit(**NO_ALLOC_OPTS)
def _port_rank(port: int) -> int:
    """0 well-known (<1024), 1 registered (<32768), 2 ephemeral."""
    if port < 1024:
        return 0
    if port < 32768:
        return 1
    return 2


@njit(**NO_ALLOC_OPTS)
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


@njit(**NO_ALLOC_OPTS)
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


@njit(**NO_ALLOC_OPTS)
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


@njit(**NO_ALLOC_OPTS)
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

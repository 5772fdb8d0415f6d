"""The metering kernel (numba): decoded packets in, flow records and edge deltas out.

The per-packet update is here; flow slots are in ``_slots``, records, edge deltas and the expiry
scan in ``_emit``, the state layouts and the ``st``/``cfg`` slots in ``_state``.

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

from cloudtap._kernel_opts import NO_ALLOC_OPTS
from cloudtap.meter._emit import (
    _emit_edge,
    _emit_record,
    _finish,
    scan,
)
from cloudtap.meter._slots import (
    _create,
    _lookup,
    client_rtt_ns,
    server_rtt_ns,
)
from cloudtap.meter._state import (
    _ACK,
    _FIN,
    _HEADROOM,
    _MAC_LO,
    _RST,
    _STATUS_OK,
    _STATUS_TRUNCATED,
    _SYN,
    _TCP,
    _U8_MAX,
    _U32_MAX,
    CFG_MAX_FLOWS,
    HS_ESTABLISHED,
    HS_SYN,
    HS_SYNACK,
    PENDING_RTT,
    ST_EDGE_N,
    ST_GROW,
    ST_METERED,
    ST_NEXT_SCAN_NS,
    ST_NOT_METERED,
    ST_NOW_NS,
    ST_OUT_N,
    ST_PACKETS,
    ST_TABLE_FULL_BYTES,
    ST_TABLE_FULL_PACKETS,
)
from cloudtap.meter._table import flow_hash
from cloudtap.meter._tcp import analyse_segment
from cloudtap.schema.flow import (
    CLOSE_CLIENT_RST,
    CLOSE_ONGOING,
    CLOSE_SERVER_REFUSED,
    CLOSE_SERVER_RST,
    SIDE_HANDSHAKE,
)


@njit(**NO_ALLOC_OPTS)
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


@njit(**NO_ALLOC_OPTS)
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

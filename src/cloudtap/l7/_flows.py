"""Per-flow L7 state: an open-addressing table keyed like the meter's flows: 5-tuple, VLAN, tunnel id
(VNI / GRE key: tenants may reuse addresses) and observation point.

The index is the meter's (``meter/_table.py``: linear probing, backward-shift deletion); slots come
from a free stack. Side ``a`` is the sender of the first packet the parser kept, ``b`` the other;
``client_dir`` says which of them sends the requests. Per direction ``d`` (0 = from a, 1 = from b):
``next_seq`` (TCP), ``skip`` (bytes of the current message still to come in later segments; -1 when
the parser lost track and waits for a segment that starts a message). ``active`` lists the used
slots densely, so the timeout scan walks live flows only.

Flow counts (docs/requests.md, "Counts on flow records"): ``n_req``, ``n_err``, ``n_ans`` and
``lat_sum_us`` add up the requests concluded in record period ``period`` (conclusion time // the
meter's record interval) or earlier and not yet moved onto a flow record (``_flow_counts.py``); the
``*1`` fields do the same for a later period ``period1`` (used only while the first bucket is not
empty). The ``*_old`` fields hold the counts of an earlier meter flow on the same key: a payload after a
gap as long as the meter's idle timeout means the meter has ended that flow and starts a new one; its
final record takes them. ``closed`` is set when the meter's final record of the flow has been seen, so requests
concluded later are counted as late instead.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from cloudtap._kernel_opts import KERNEL_OPTS
from cloudtap.meter._table import flow_hash, index_insert, index_remove

L7_FLOW_DTYPE = np.dtype(
    [
        ("a_hi", "u8"),
        ("a_lo", "u8"),
        ("b_hi", "u8"),
        ("b_lo", "u8"),
        ("last_ns", "i8"),
        ("lat_sum_us", "u8"),
        ("lat_sum_us1", "u8"),
        ("period", "i8"),
        ("period1", "i8"),
        ("lat_sum_us_old", "u8"),
        ("skip0", "i8"),
        ("skip1", "i8"),
        ("seq0", "u4"),
        ("seq1", "u4"),
        ("hash", "u4"),
        ("tunnel_id", "u4"),
        ("active_pos", "i4"),
        ("n_req", "u4"),
        ("n_err", "u4"),
        ("n_ans", "u4"),
        ("n_req1", "u4"),
        ("n_err1", "u4"),
        ("n_ans1", "u4"),
        ("n_req_old", "u4"),
        ("n_err_old", "u4"),
        ("n_ans_old", "u4"),
        ("a_port", "u2"),
        ("b_port", "u2"),
        ("interface", "u2"),
        ("vlan", "u2"),
        ("proto", "u1"),
        ("used", "u1"),
        ("l7", "u1"),
        ("client_dir", "u1"),
        ("seq_ok0", "u1"),
        ("seq_ok1", "u1"),
        ("q_head", "u1"),
        ("q_len", "u1"),
        ("dead", "u1"),
        ("ext_open", "u1"),
        ("closed", "u1"),
    ],
    align=True,
)


@njit(**KERNEL_OPTS)
def packet_hash(p: np.void) -> np.uint32:
    """Direction-independent hash of a packet's flow key: the meter's (5-tuple, VLAN, tunnel id, point)."""
    return flow_hash(
        p.src_hi, p.src_lo, p.sport, p.dst_hi, p.dst_lo, p.dport, p.proto, p.vlan, p.tunnel_id, p.interface
    )


@njit(**KERNEL_OPTS)
def lookup(flows: np.ndarray, idx_slot: np.ndarray, idx_hash: np.ndarray, p: np.void, h: np.uint32) -> tuple:
    """(slot, direction) of the packet's flow; slot -1 when absent."""
    mask = idx_slot.shape[0] - 1
    pos = int(h) & mask
    while True:
        s = idx_slot[pos]
        if s < 0:
            return -1, 0
        if idx_hash[pos] == h:
            f = flows[s]
            if (
                f.proto == p.proto
                and f.interface == p.interface
                and f.vlan == p.vlan
                and f.tunnel_id == p.tunnel_id
            ):
                if (
                    f.a_lo == p.src_lo
                    and f.a_hi == p.src_hi
                    and f.a_port == p.sport
                    and f.b_lo == p.dst_lo
                    and f.b_hi == p.dst_hi
                    and f.b_port == p.dport
                ):
                    return s, 0
                if (
                    f.b_lo == p.src_lo
                    and f.b_hi == p.src_hi
                    and f.b_port == p.sport
                    and f.a_lo == p.dst_lo
                    and f.a_hi == p.dst_hi
                    and f.a_port == p.dport
                ):
                    return s, 1
        pos = (pos + 1) & mask


@njit(**KERNEL_OPTS)
def insert(
    flows: np.ndarray, idx_slot: np.ndarray, idx_hash: np.ndarray, free: np.ndarray, active: np.ndarray,
    st: np.ndarray, p: np.void, h: np.uint32, free_top: int, n_active: int,
) -> int:  # fmt: skip
    """Take a free slot for the packet's flow (side a = sender); -1 when the table is full."""
    top = st[free_top]
    if top == 0:
        return -1
    top -= 1
    st[free_top] = top
    s = int(free[top])
    f = flows[s]
    f.a_hi = p.src_hi
    f.a_lo = p.src_lo
    f.b_hi = p.dst_hi
    f.b_lo = p.dst_lo
    f.a_port = p.sport
    f.b_port = p.dport
    f.proto = p.proto
    f.interface = p.interface
    f.vlan = p.vlan
    f.tunnel_id = p.tunnel_id
    f.hash = h
    f.used = 1
    f.l7 = 0
    f.client_dir = 0
    f.skip0 = 0
    f.skip1 = 0
    f.seq_ok0 = 0
    f.seq_ok1 = 0
    f.q_head = 0
    f.q_len = 0
    f.dead = 0
    f.ext_open = 0
    f.closed = 0
    f.n_req = 0
    f.n_err = 0
    f.n_ans = 0
    f.lat_sum_us = 0
    f.n_req1 = 0
    f.n_err1 = 0
    f.n_ans1 = 0
    f.lat_sum_us1 = 0
    f.n_req_old = 0
    f.n_err_old = 0
    f.n_ans_old = 0
    f.lat_sum_us_old = 0
    f.last_ns = p.ts_ns
    index_insert(idx_slot, idx_hash, h, s)
    f.active_pos = st[n_active]
    active[st[n_active]] = s
    st[n_active] += 1
    return s


@njit(**KERNEL_OPTS)
def remove(
    flows: np.ndarray, idx_slot: np.ndarray, idx_hash: np.ndarray, free: np.ndarray, active: np.ndarray,
    st: np.ndarray, s: int, free_top: int, n_active: int,
) -> None:  # fmt: skip
    """Free slot ``s`` (its queue must be empty); the last active flow takes its place in ``active``."""
    index_remove(idx_slot, idx_hash, flows[s].hash, s)
    last = st[n_active] - 1
    moved = active[last]
    active[flows[s].active_pos] = moved
    flows[moved].active_pos = flows[s].active_pos
    st[n_active] = last
    flows[s].used = 0
    free[st[free_top]] = s
    st[free_top] += 1


@njit(**KERNEL_OPTS)
def find_flow(
    flows: np.ndarray, idx_slot: np.ndarray, idx_hash: np.ndarray, h: np.uint32,
    x_hi: np.uint64, x_lo: np.uint64, x_port: np.uint16, y_hi: np.uint64, y_lo: np.uint64, y_port: np.uint16,
    proto: np.uint8, vlan: np.uint16, tunnel_id: np.uint32, interface: np.uint16,
) -> int:  # fmt: skip
    """Slot of the flow between endpoints ``x`` and ``y`` (either may be side ``a``); -1 when absent."""
    mask = idx_slot.shape[0] - 1
    pos = int(h) & mask
    while True:
        s = idx_slot[pos]
        if s < 0:
            return -1
        if idx_hash[pos] == h:
            f = flows[s]
            if f.proto == proto and f.interface == interface and f.vlan == vlan and f.tunnel_id == tunnel_id:
                if (
                    f.a_lo == x_lo and f.a_hi == x_hi and f.a_port == x_port
                    and f.b_lo == y_lo and f.b_hi == y_hi and f.b_port == y_port
                ):  # fmt: skip
                    return s
                if (
                    f.b_lo == x_lo and f.b_hi == x_hi and f.b_port == x_port
                    and f.a_lo == y_lo and f.a_hi == y_hi and f.a_port == y_port
                ):  # fmt: skip
                    return s
        pos = (pos + 1) & mask

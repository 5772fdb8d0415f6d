"""Request counts moved from the parser's flows onto the meter's flow records (numba).

Array contract: ``records`` is a ``FLOW_DTYPE[n]`` array the meter emitted (written in place); the
flow table arrays are the :class:`~cloudtap.l7.parser.RequestParser`'s (``_flows.py``); ``st`` its
counters (``_queue.py``). A record finds its parser flow by the same key the parser uses (5-tuple,
VLAN, tunnel id, observation point), in either orientation: the meter's client may be either side.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from cloudtap._kernel_opts import KERNEL_OPTS
from cloudtap.l7._flows import find_flow, remove
from cloudtap.l7._queue import ST_ACTIVE, ST_CLOCK, ST_FLOW_LATE, ST_FREE_TOP, ST_PERIOD_NS
from cloudtap.meter._table import flow_hash
from cloudtap.schema.flow import CLOSE_ONGOING

#: Record period when counts are not bucketed by period: every bucket's counts go on the next record.
_ANY_PERIOD = 1 << 62


@njit(**KERNEL_OPTS)
def annotate_records(
    records: np.ndarray, flows: np.ndarray, idx_slot: np.ndarray, idx_hash: np.ndarray, free: np.ndarray,
    active: np.ndarray, st: np.ndarray,
) -> int:  # fmt: skip
    """Add each record's flow counts to its request fields and zero them; return the records matched.

    Counts concluded in a record period after the record's (``last_ns // ST_PERIOD_NS``) stay for the
    flow's next record. A final record (``close_type`` not ongoing) takes them all and ends the parser
    flow: forgotten when nothing is pending, else marked ``closed`` so later conclusions count as late.
    """
    matched = 0
    for i in range(records.shape[0]):
        r = records[i]
        if r.proto != 6 and r.proto != 17:
            continue
        h = flow_hash(
            r.client_hi, r.client_lo, r.client_port, r.server_hi, r.server_lo, r.server_port, r.proto, r.vlan,
            r.tunnel_id, r.interface,
        )  # fmt: skip
        s = find_flow(
            flows, idx_slot, idx_hash, h, r.client_hi, r.client_lo, r.client_port, r.server_hi, r.server_lo,
            r.server_port, r.proto, r.vlan, r.tunnel_id, r.interface,
        )  # fmt: skip
        if s < 0:
            continue
        matched += 1
        f = flows[s]
        final = r.close_type != CLOSE_ONGOING
        if final and f.n_req_old > 0:  # the final record of an earlier meter flow on this key
            r.requests += f.n_req_old
            r.request_errors += f.n_err_old
            r.requests_answered += f.n_ans_old
            r.request_latency_sum_us += f.lat_sum_us_old
            f.n_req_old = 0
            f.n_err_old = 0
            f.n_ans_old = 0
            f.lat_sum_us_old = 0
            continue  # the parser's flow goes on: it is the meter's next flow now
        period = r.last_ns // st[ST_PERIOD_NS] if st[ST_PERIOD_NS] > 0 else _ANY_PERIOD
        if f.n_req > 0 and (final or f.period <= period):
            r.requests += f.n_req
            r.request_errors += f.n_err
            r.requests_answered += f.n_ans
            r.request_latency_sum_us += f.lat_sum_us
            if f.n_req1 > 0 and (final or f.period1 <= period):
                r.requests += f.n_req1
                r.request_errors += f.n_err1
                r.requests_answered += f.n_ans1
                r.request_latency_sum_us += f.lat_sum_us1
                f.n_req1 = 0
            # the second bucket (a later period, or empty) becomes the first
            f.n_req = f.n_req1
            f.n_err = f.n_err1 if f.n_req1 > 0 else 0
            f.n_ans = f.n_ans1 if f.n_req1 > 0 else 0
            f.lat_sum_us = f.lat_sum_us1 if f.n_req1 > 0 else 0
            f.period = f.period1
            f.n_req1 = 0
            f.n_err1 = 0
            f.n_ans1 = 0
            f.lat_sum_us1 = 0
        if final:
            if f.q_len == 0:
                remove(flows, idx_slot, idx_hash, free, active, st, s, ST_FREE_TOP, ST_ACTIVE)
            else:
                f.closed = 1
    return matched


@njit(**KERNEL_OPTS)
def clear(f: np.void) -> None:
    """Zero every count bucket of flow ``f``."""
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


@njit(**KERNEL_OPTS)
def expire_counts(
    flows: np.ndarray, idx_slot: np.ndarray, idx_hash: np.ndarray, free: np.ndarray, active: np.ndarray,
    st: np.ndarray, hold_ns: int,
) -> int:  # fmt: skip
    """Forget flows whose counts waited ``hold_ns`` (packet time since their last payload) with nothing
    pending: no flow record took them; they are counted late. Returns the requests counted late.

    Called right after the meter's records were annotated, so that the parser (which sees a batch before
    the meter does) never gives up on counts whose record the meter emitted from that same batch.
    """
    late = 0
    clock = st[ST_CLOCK]
    for k in range(st[ST_ACTIVE] - 1, -1, -1):
        s = int(active[k])
        f = flows[s]
        if f.q_len > 0 or (f.n_req == 0 and f.n_req_old == 0) or clock - f.last_ns < hold_ns:
            continue
        late += int(f.n_req) + int(f.n_req1) + int(f.n_req_old)
        clear(f)
        remove(flows, idx_slot, idx_hash, free, active, st, s, ST_FREE_TOP, ST_ACTIVE)
    st[ST_FLOW_LATE] += late
    return late


@njit(**KERNEL_OPTS)
def release_counts(
    flows: np.ndarray, idx_slot: np.ndarray, idx_hash: np.ndarray, free: np.ndarray, active: np.ndarray,
    st: np.ndarray,
) -> int:  # fmt: skip
    """End of input, after the meter's last records: count what no record took as late and forget every
    flow with nothing pending. Returns the requests counted late."""
    late = 0
    for k in range(st[ST_ACTIVE] - 1, -1, -1):
        s = int(active[k])
        f = flows[s]
        if f.q_len > 0:
            continue
        late += int(f.n_req) + int(f.n_req1) + int(f.n_req_old)
        clear(f)
        remove(flows, idx_slot, idx_hash, free, active, st, s, ST_FREE_TOP, ST_ACTIVE)
    st[ST_FLOW_LATE] += late
    return late

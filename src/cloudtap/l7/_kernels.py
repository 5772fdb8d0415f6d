"""The per-packet L7 loop: find the payload, the flow, detect the protocol, dispatch, time out.

``parse_batch`` walks decoded packet rows, reads their L4 payload from the frame buffer and hands
each segment to its protocol's parser. It stops early (returning the next packet index) when the
output might not hold what one more packet can emit; the wrapper drains and calls again.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from cloudtap._kernel_opts import KERNEL_OPTS
from cloudtap.l7 import _dns, _http, _mysql, _pgsql, _redis
from cloudtap.l7._detect import detect
from cloudtap.l7._flows import insert, lookup, packet_hash, remove
from cloudtap.l7._queue import (
    ST_ACTIVE,
    ST_CLOCK,
    ST_FREE_TOP,
    ST_GAPS,
    ST_N_OUT,
    ST_NEXT_SCAN,
    ST_PROTO_OFF,
    ST_RETRANS,
    ST_SNAPLEN_CUT,
    ST_TABLE_FULL,
    ST_TIMEOUTS,
    finish,
    queue_row,
    retire_counts,
)
from cloudtap.schema.packet import FLAG_L4, FLAG_LATER_FRAGMENT, STATUS_OK
from cloudtap.schema.request import (
    L7_DNS,
    L7_HTTP,
    L7_MYSQL,
    L7_PGSQL,
    L7_REDIS,
    REQ_TIMEOUT,
    REQ_UNANSWERED,
)

# prm[] slots -------------------------------------------------------------------------------------
P_QUEUE = 0  #: pending requests per flow
P_TIMEOUT_NS = 1  #: a request without response for this long is emitted as timed out
P_IDLE_NS = 2  #: a flow with nothing pending and no packet for this long is forgotten
P_SCAN_NS = 3  #: packet time between timeout scans
P_HOLD_NS = 4  #: > 0: a flow keeps its counts this long after its last payload, waiting for a flow record
P_PROTOS = 5  #: bit mask of the enabled L7_* protocols (bit ``1 << l7``)
P_GAP_NS = 6  #: > 0: the meter's idle timeout (UDP...): a payload after such a gap starts a new meter flow
P_GAP_TCP_NS = 7  #: the same for TCP (the meter's established-TCP idle timeout)
P_SIZE = 8

#: Output rows that must be free before a packet is processed: every message of a segment may
#: emit, plus one overflow per message.
RESERVE = 2 * _http.MAX_MESSAGES + 8


@njit(**KERNEL_OPTS)
def _segment(
    data: np.ndarray, l7: int, pos: int, end: int, tot_end: int, from_client: bool, is_tcp: bool,
    ts: int, s: int, q: int, flows: np.ndarray, pend: np.ndarray, pend_raw: np.ndarray,
    out: np.ndarray, out_raw: np.ndarray, st: np.ndarray, stmt_id: np.ndarray, stmt_text: np.ndarray,
) -> int:  # fmt: skip
    """Dispatch one segment (from its first unparsed byte) to its protocol; return the new skip."""
    if l7 == L7_HTTP:
        if from_client:
            return _http.client_segment(
                data, pos, end, tot_end, ts, s, q, flows, pend, pend_raw, out, out_raw, st
            )
        return _http.server_segment(
            data, pos, end, tot_end, ts, s, q, flows, pend, pend_raw, out, out_raw, st
        )
    if l7 == L7_DNS:
        if is_tcp:
            return _dns.tcp_segment(
                data, pos, end, tot_end, from_client, ts, s, q, flows, pend, pend_raw, out, out_raw, st
            )
        _dns.message(data, pos, end, from_client, ts, s, q, flows, pend, pend_raw, out, out_raw, st)
        return 0
    if l7 == L7_REDIS:
        return _redis.segment(
            data, pos, end, tot_end, from_client, ts, s, q, flows, pend, pend_raw, out, out_raw, st
        )
    if l7 == L7_MYSQL:
        return _mysql.segment(
            data, pos, end, tot_end, from_client, ts, s, q, flows, pend, pend_raw, out, out_raw, st,
            stmt_id, stmt_text,
        )  # fmt: skip
    if l7 == L7_PGSQL:
        return _pgsql.segment(
            data, pos, end, tot_end, from_client, ts, s, q, flows, pend, pend_raw, out, out_raw, st
        )
    return -1


@njit(**KERNEL_OPTS)
def parse_batch(
    data: np.ndarray, frame_offset: np.ndarray, packets: np.ndarray, first: int,
    flows: np.ndarray, idx_slot: np.ndarray, idx_hash: np.ndarray, free: np.ndarray, active: np.ndarray,
    pend: np.ndarray, pend_raw: np.ndarray, out: np.ndarray, out_raw: np.ndarray,
    st: np.ndarray, prm: np.ndarray, stmt_id: np.ndarray, stmt_text: np.ndarray,
) -> int:  # fmt: skip
    """Parse packets ``first..``; return the index of the first packet not processed.

    ``stmt_id`` / ``stmt_text`` hold each flow's last prepared MySQL statements (``STMT_SLOTS`` per flow).
    """
    n = packets.shape[0]
    q = int(prm[P_QUEUE])
    cap = out.shape[0]
    for i in range(first, n):
        if st[ST_N_OUT] + RESERVE > cap:
            return i
        p = packets[i]
        ts = p.ts_ns
        if ts > st[ST_CLOCK]:
            st[ST_CLOCK] = ts
        if st[ST_CLOCK] >= st[ST_NEXT_SCAN]:
            if not scan(
                flows, idx_slot, idx_hash, free, active, pend, pend_raw, out, out_raw, st, prm, False
            ):
                return i
            st[ST_NEXT_SCAN] = st[ST_CLOCK] + prm[P_SCAN_NS]
        if p.status != STATUS_OK or (p.flags & FLAG_L4) == 0 or (p.flags & FLAG_LATER_FRAGMENT) != 0:
            continue
        is_tcp = p.proto == 6
        if not is_tcp and p.proto != 17:
            continue
        total = int(p.payload_len)
        if total == 0:
            continue
        base = int(frame_offset[p.frame_index])
        cap_end = base + int(p.cap_len)
        l4 = base + int(p.l4_offset)
        if is_tcp:
            if l4 + 13 >= cap_end:
                continue
            pos = l4 + ((int(data[l4 + 12]) >> 4) << 2)
        else:
            pos = l4 + 8
        tot_end = pos + total
        end = min(tot_end, cap_end, data.shape[0])
        if end <= pos:
            st[ST_SNAPLEN_CUT] += 1
            continue
        if end < tot_end:
            st[ST_SNAPLEN_CUT] += 1
        h = packet_hash(p)
        s, d = lookup(flows, idx_slot, idx_hash, p, h)
        if s < 0:
            l7 = detect(data, pos, end, tot_end, is_tcp, p.sport, p.dport, pend_raw)
            if l7 == 0:
                continue
            if (prm[P_PROTOS] >> abs(l7)) & 1 == 0:
                st[ST_PROTO_OFF] += 1
                continue
            s = insert(flows, idx_slot, idx_hash, free, active, st, p, h, ST_FREE_TOP, ST_ACTIVE)
            if s < 0:
                st[ST_TABLE_FULL] += 1
                continue
            d = 0
            f = flows[s]
            f.l7 = abs(l7)
            f.client_dir = 0 if l7 > 0 else 1
            for j in range(_mysql.STMT_SLOTS):
                stmt_id[s * _mysql.STMT_SLOTS + j] = -1
        f = flows[s]
        if f.dead:
            continue
        gap = prm[P_GAP_TCP_NS] if is_tcp else prm[P_GAP_NS]
        if gap > 0 and f.n_req > 0 and ts - f.last_ns >= gap:
            retire_counts(f)  # they belong to the meter flow that ended, not to the one this packet opens
        f.last_ns = ts
        if is_tcp:
            seq = np.uint32(p.tcp_seq)
            nxt = np.uint32(seq + np.uint32(total))
            ok = f.seq_ok0 if d == 0 else f.seq_ok1
            if ok:
                expect = f.seq0 if d == 0 else f.seq1
                diff = np.int32(seq - expect)
                if diff < 0:
                    st[ST_RETRANS] += 1
                    continue
                if diff > 0:
                    st[ST_GAPS] += 1
                    if d == 0:
                        f.skip0 = -1
                    else:
                        f.skip1 = -1
            if d == 0:
                f.seq0 = nxt
                f.seq_ok0 = 1
            else:
                f.seq1 = nxt
                f.seq_ok1 = 1
            skip = f.skip0 if d == 0 else f.skip1
            if skip > 0:
                if skip >= total:
                    if d == 0:
                        f.skip0 = skip - total
                    else:
                        f.skip1 = skip - total
                    continue
                pos += skip
                if pos >= end:
                    if d == 0:
                        f.skip0 = 0
                    else:
                        f.skip1 = 0
                    continue
        from_client = d == int(f.client_dir)
        new_skip = _segment(
            data, int(f.l7), pos, end, tot_end, from_client, is_tcp, ts, s, q, flows, pend, pend_raw,
            out, out_raw, st, stmt_id, stmt_text,
        )  # fmt: skip
        if d == 0:
            f.skip0 = new_skip
        else:
            f.skip1 = new_skip
    return n


@njit(**KERNEL_OPTS)
def scan(
    flows: np.ndarray, idx_slot: np.ndarray, idx_hash: np.ndarray, free: np.ndarray, active: np.ndarray,
    pend: np.ndarray, pend_raw: np.ndarray, out: np.ndarray, out_raw: np.ndarray,
    st: np.ndarray, prm: np.ndarray, final: bool,
) -> bool:  # fmt: skip
    """Emit timed-out requests (all pending ones when ``final``) and forget idle flows.

    Returns False when the output filled up first (call again after draining).
    """
    q = int(prm[P_QUEUE])
    clock = st[ST_CLOCK]
    cap = out.shape[0]
    for k in range(st[ST_ACTIVE] - 1, -1, -1):  # backwards: a removal moves the last flow into k
        s = int(active[k])
        f = flows[s]
        if st[ST_N_OUT] + q > cap:
            return False
        while f.q_len > 0:
            r = queue_row(flows, s, 0, q)
            if clock - pend[r].req_ns >= prm[P_TIMEOUT_NS]:
                st[ST_TIMEOUTS] += 1
                finish(flows, pend, pend_raw, out, out_raw, st, s, 0, q, 0, REQ_TIMEOUT)
            elif final:
                finish(flows, pend, pend_raw, out, out_raw, st, s, 0, q, 0, REQ_UNANSWERED)
            else:
                break
        if f.q_len > 0:
            continue
        if (f.n_req > 0 or f.n_req_old > 0) and prm[P_HOLD_NS] > 0:
            continue  # its counts wait for the meter's next record of the flow (see _flow_counts.py)
        if final or clock - f.last_ns >= prm[P_IDLE_NS]:
            remove(flows, idx_slot, idx_hash, free, active, st, s, ST_FREE_TOP, ST_ACTIVE)
    return True

# mypy: disable-error-code="no-untyped-def, assignment, call-overload, untyped-decorator"
"""Numba kernels that turn sessions into packet plans (one PLAN_DTYPE row per packet).

Each kernel walks its sessions once and writes rows in generation order (not time order: the
caller sorts). Rows past ``plan``'s capacity are counted but not written, so the caller can retry
with the exact size. Packets at or after ``end_ns`` are dropped and mark the session truncated.
Randomness comes from numba's generator, seeded at the start of each kernel: same seed, same plan.

TCP model, as a tap between client and server sees it: ``hs`` is tap->server->tap delay, ``hc``
tap->client->tap. Data go in flights (initial window 10, doubling to 40 segments) or paced at a
fixed rate (bulk); the receiver ACKs every second segment and the last of each flight. A lost
segment ends its flight and is resent after an RTO (>= 200 ms): one retransmission, no dup ACKs.
A zero-window episode is one ACK with window 0 and, 10-150 ms later, a window update.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from cloudtap._kernel_opts import KERNEL_OPTS

_FIN = 0x01
_SYN = 0x02
_RST = 0x04
_PSH = 0x08
_ACK = 0x10

_CLOSE_FIN = 1
_CLOSE_CLIENT_RST = 2
_CLOSE_SERVER_RST = 3
_CLOSE_SYN_UNANSWERED = 4
_CLOSE_SERVER_REFUSED = 5

_KIND_BULK = 1
_KIND_SCAN = 2
_KIND_ICMP = 4

_WIN_SYN_C = 64240
_WIN_SYN_S = 65160
_WIN_C = 502  # x128 (window scale 7) = 64256 bytes
_WIN_S = 509  # x128 = 65152 bytes
_MAX_FLIGHT = 40
_INIT_FLIGHT = 10
_MIN_RTO_NS = 200_000_000
_U32 = 0xFFFFFFFF

_P_REQ_MIN, _P_REQ_MAX = 0, 1
_P_REQB_MIN, _P_REQB_MAX = 2, 3
_P_RESPB_MIN, _P_RESPB_MAX = 4, 5
_P_THINK_MIN, _P_THINK_MAX = 6, 7
_P_SRV_MIN, _P_SRV_MAX = 8, 9
_P_LOSS = 10
_P_CLOSE_BY_SERVER = 11


@njit(**KERNEL_OPTS)
def _randint(lo: int, hi: int) -> int:
    """Uniform integer in [lo, hi] (inclusive)."""
    if hi <= lo:
        return lo
    return lo + int(np.random.random() * (hi - lo + 1))


@njit(**KERNEL_OPTS)
def _uniform_ns(lo: float, hi: float) -> int:
    return int(lo + (hi - lo) * np.random.random())


@njit(**KERNEL_OPTS)
def _log_uniform(lo: float, hi: float) -> int:
    lo = max(lo, 1.0)
    hi = max(hi, lo)
    return int(math.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * np.random.random()) + 0.5)


@njit(**KERNEL_OPTS)
def _no_runt(nbytes, mss):
    """Grow a message so that its last segment carries at least 64 bytes (no 1-byte tails)."""
    tail = nbytes % mss
    if nbytes > mss and 0 < tail < 64:
        return nbytes + 64
    return nbytes


@njit(**KERNEL_OPTS)
def _emit(plan, n, end_ns, trunc, ipid, s, ts, d, flags, seq, ack, win, plen, retrans, proto):
    """Append one packet row (or count it past capacity); drop it when at/after end_ns."""
    if ts >= end_ns:
        trunc[s] = 1
        return n
    if n < plan.shape[0]:
        r = plan[n]
        r.ts = ts
        r.sess = s
        r.plen = plen
        r.seq = seq & _U32
        r.ack = ack & _U32
        r.win = win
        r.ipid = ipid[d] & 0xFFFF
        r.dir = d
        r.flags = flags
        r.retrans = retrans
        r.proto = proto
    ipid[d] += 1
    return n + 1


@njit(**KERNEL_OPTS)
def _transfer(
    plan,
    n,
    end_ns,
    trunc,
    ipid,
    s,
    t0,
    d,
    nbytes,
    mss,
    h_snd,
    h_rcv,
    seq_snd,
    seq_rcv,
    win_snd,
    win_rcv,
    loss,
    zw_at,
    ns_per_byte,
):
    """Send ``nbytes`` in direction ``d`` with the receiver's ACKs. Returns (n, last_ts, next_seq)."""
    nseg = (nbytes + mss - 1) // mss
    rcv = 1 - d
    t = t0
    last_t = t0
    sent = 0
    cwnd = _INIT_FLIGHT
    remaining = nbytes
    while sent < nseg:
        if ns_per_byte > 0.0:
            flight = nseg - sent
        else:
            flight = min(cwnd, nseg - sent)
        pending = 0
        pend_t = t
        k = 0
        while k < flight:
            if t >= end_ns:
                trunc[s] = 1
                return n, last_t, seq_snd
            seg = sent + k
            ln = min(mss, remaining)
            lost = loss > 0.0 and np.random.random() < loss
            if lost and pending > 0:
                at = pend_t + h_rcv
                n = _emit(plan, n, end_ns, trunc, ipid, s, at, rcv, _ACK, seq_rcv, seq_snd, win_rcv, 0, 0, 6)
                last_t = max(last_t, at)
                pending = 0
            flags = _ACK
            if k == flight - 1 or seg == nseg - 1:
                flags |= _PSH
            n = _emit(plan, n, end_ns, trunc, ipid, s, t, d, flags, seq_snd, seq_rcv, win_snd, ln, 0, 6)
            seg_t = t
            seq_snd += ln
            remaining -= ln
            if ns_per_byte > 0.0:
                t += max(1, int(ln * ns_per_byte))
            else:
                t += _randint(800, 3000)
            k += 1
            if lost:
                rt = seg_t + _MIN_RTO_NS + 2 * (h_snd + h_rcv) + _randint(0, 20_000_000)
                n = _emit(
                    plan,
                    n,
                    end_ns,
                    trunc,
                    ipid,
                    s,
                    rt,
                    d,
                    _ACK | _PSH,
                    seq_snd - ln,
                    seq_rcv,
                    win_snd,
                    ln,
                    1,
                    6,
                )
                at = rt + h_rcv
                n = _emit(plan, n, end_ns, trunc, ipid, s, at, rcv, _ACK, seq_rcv, seq_snd, win_rcv, 0, 0, 6)
                last_t = at
                break
            pending += 1
            pend_t = seg_t
            if seg == zw_at:
                at = seg_t + h_rcv
                n = _emit(plan, n, end_ns, trunc, ipid, s, at, rcv, _ACK, seq_rcv, seq_snd, 0, 0, 0, 6)
                ut = at + _randint(10_000_000, 150_000_000)
                n = _emit(plan, n, end_ns, trunc, ipid, s, ut, rcv, _ACK, seq_rcv, seq_snd, win_rcv, 0, 0, 6)
                last_t = ut
                break
            if pending == 2 or k == flight or seg == nseg - 1:
                at = seg_t + h_rcv
                n = _emit(plan, n, end_ns, trunc, ipid, s, at, rcv, _ACK, seq_rcv, seq_snd, win_rcv, 0, 0, 6)
                last_t = max(last_t, at)
                pending = 0
        sent += k
        if sent < nseg:
            t = last_t + h_snd + _randint(1000, 5000)
            cwnd = min(cwnd * 2, _MAX_FLIGHT)
    return n, last_t, seq_snd


@njit(**KERNEL_OPTS)
def _close(plan, n, end_ns, trunc, ipid, s, t, close, by_server, hs, hc, seq_c, seq_s):
    """Emit the end of an established connection: FIN handshake or client RST."""
    if close == _CLOSE_CLIENT_RST:
        return _emit(plan, n, end_ns, trunc, ipid, s, t, 0, _RST | _ACK, seq_c, seq_s, 0, 0, 0, 6)
    if by_server:
        n = _emit(plan, n, end_ns, trunc, ipid, s, t, 1, _FIN | _ACK, seq_s, seq_c, _WIN_S, 0, 0, 6)
        t += hc
        n = _emit(plan, n, end_ns, trunc, ipid, s, t, 0, _FIN | _ACK, seq_c, seq_s + 1, _WIN_C, 0, 0, 6)
        t += hs
        return _emit(plan, n, end_ns, trunc, ipid, s, t, 1, _ACK, seq_s + 1, seq_c + 1, _WIN_S, 0, 0, 6)
    n = _emit(plan, n, end_ns, trunc, ipid, s, t, 0, _FIN | _ACK, seq_c, seq_s, _WIN_C, 0, 0, 6)
    t += hs
    n = _emit(plan, n, end_ns, trunc, ipid, s, t, 1, _FIN | _ACK, seq_s, seq_c + 1, _WIN_S, 0, 0, 6)
    t += hc
    return _emit(plan, n, end_ns, trunc, ipid, s, t, 0, _ACK, seq_c + 1, seq_s + 1, _WIN_C, 0, 0, 6)


@njit(**KERNEL_OPTS)
def plan_tcp(
    plan,
    seed,
    end_ns,
    mss,
    which,
    start,
    kind,
    close,
    svc,
    hs,
    hc,
    zw,
    retries,
    bulk_bytes,
    ns_per_byte,
    params,
    hs_times,
    trunc,
):
    """Plan every packet of the TCP sessions listed in ``which``.

    Args:
        plan: PLAN_DTYPE output rows (capacity).
        seed: generator seed.
        end_ns: packets at/after this time are dropped.
        mss: maximum segment size.
        which: int64 indices of the sessions to plan (rows of the per-session arrays).
        start, kind, close, svc, hs, hc, zw, retries, bulk_bytes, ns_per_byte: per-session inputs.
        params: float64 [n_services, N_PARAMS] table.
        hs_times: int64 [n_sessions, 3] output: SYN, SYN-ACK, ACK times (-1 if not sent).
        trunc: uint8 [n_sessions] output: 1 when a packet fell past end_ns.

    Returns:
        Number of rows needed (may exceed capacity: then retry with that size).
    """
    np.random.seed(seed)
    n = 0
    ipid = np.zeros(2, np.int64)
    for j in range(which.shape[0]):
        s = which[j]
        p = svc[s]
        t = start[s]
        h_s = hs[s]
        h_c = hc[s]
        c = int(close[s])
        k = int(kind[s])
        ipid[0] = _randint(0, 65535)
        ipid[1] = _randint(0, 65535)
        isn_c = _randint(0, _U32)
        isn_s = _randint(0, _U32)
        if t < end_ns:
            hs_times[s, 0] = t
        n = _emit(plan, n, end_ns, trunc, ipid, s, t, 0, _SYN, isn_c, 0, _WIN_SYN_C, 0, 0, 6)
        if c == _CLOSE_SYN_UNANSWERED:
            gap = 1_000_000_000
            for _ in range(retries[s]):
                t += gap
                gap *= 2
                n = _emit(plan, n, end_ns, trunc, ipid, s, t, 0, _SYN, isn_c, 0, _WIN_SYN_C, 0, 1, 6)
            continue
        t += h_s
        if c == _CLOSE_SERVER_REFUSED:
            n = _emit(plan, n, end_ns, trunc, ipid, s, t, 1, _RST | _ACK, 0, isn_c + 1, 0, 0, 0, 6)
            continue
        if t < end_ns:
            hs_times[s, 1] = t
        n = _emit(plan, n, end_ns, trunc, ipid, s, t, 1, _SYN | _ACK, isn_s, isn_c + 1, _WIN_SYN_S, 0, 0, 6)
        seq_c = isn_c + 1
        seq_s = isn_s + 1
        t += h_c
        if k == _KIND_SCAN:
            n = _emit(plan, n, end_ns, trunc, ipid, s, t, 0, _RST, seq_c, 0, 0, 0, 0, 6)
            continue
        if t < end_ns:
            hs_times[s, 2] = t
        n = _emit(plan, n, end_ns, trunc, ipid, s, t, 0, _ACK, seq_c, seq_s, _WIN_C, 0, 0, 6)
        loss = params[p, _P_LOSS]
        t += _randint(10_000, 200_000)
        if k == _KIND_BULK:
            nbytes = _no_runt(bulk_bytes[s], mss)
            zw_at = _randint(0, (nbytes + mss - 1) // mss - 1) if zw[s] else -1
            n, t, seq_c = _transfer(
                plan,
                n,
                end_ns,
                trunc,
                ipid,
                s,
                t,
                0,
                nbytes,
                mss,
                h_c,
                h_s,
                seq_c,
                seq_s,
                _WIN_C,
                _WIN_S,
                loss,
                zw_at,
                ns_per_byte[s],
            )
            if c != _CLOSE_CLIENT_RST:
                c = _CLOSE_FIN
        else:
            nreq = _randint(int(params[p, _P_REQ_MIN]), int(params[p, _P_REQ_MAX]))
            zw_ex = _randint(0, nreq - 1) if zw[s] else -1
            reset = False
            for e in range(nreq):
                if t >= end_ns:
                    break
                if e > 0:
                    t += _uniform_ns(params[p, _P_THINK_MIN], params[p, _P_THINK_MAX])
                req = _no_runt(_log_uniform(params[p, _P_REQB_MIN], params[p, _P_REQB_MAX]), mss)
                n, t, seq_c = _transfer(
                    plan,
                    n,
                    end_ns,
                    trunc,
                    ipid,
                    s,
                    t,
                    0,
                    req,
                    mss,
                    h_c,
                    h_s,
                    seq_c,
                    seq_s,
                    _WIN_C,
                    _WIN_S,
                    loss,
                    -1,
                    0.0,
                )
                t += _uniform_ns(params[p, _P_SRV_MIN], params[p, _P_SRV_MAX]) + 1000
                if c == _CLOSE_SERVER_RST and e == nreq - 1:
                    n = _emit(plan, n, end_ns, trunc, ipid, s, t, 1, _RST | _ACK, seq_s, seq_c, 0, 0, 0, 6)
                    reset = True
                    break
                resp = _no_runt(_log_uniform(params[p, _P_RESPB_MIN], params[p, _P_RESPB_MAX]), mss)
                zw_at = _randint(0, (resp + mss - 1) // mss - 1) if e == zw_ex else -1
                n, t, seq_s = _transfer(
                    plan,
                    n,
                    end_ns,
                    trunc,
                    ipid,
                    s,
                    t,
                    1,
                    resp,
                    mss,
                    h_s,
                    h_c,
                    seq_s,
                    seq_c,
                    _WIN_S,
                    _WIN_C,
                    loss,
                    zw_at,
                    0.0,
                )
            if reset:
                continue
        t += _randint(20_000, 500_000)
        by_server = np.random.random() < params[p, _P_CLOSE_BY_SERVER]
        n = _close(plan, n, end_ns, trunc, ipid, s, t, c, by_server, h_s, h_c, seq_c, seq_s)
    return n


@njit(**KERNEL_OPTS)
def plan_dgram(plan, seed, end_ns, which, start, kind, close, svc, hs, params, trunc):
    """Plan UDP request/response and ICMP echo conversations (``close`` 4 = no replies).

    Args:
        plan: PLAN_DTYPE output rows (capacity).
        seed: generator seed.
        end_ns: packets at/after this time are dropped.
        which: int64 indices of the sessions to plan.
        start, kind, close, svc, hs: per-session inputs.
        params: float64 [n_services, N_PARAMS] table (ICMP: think = echo interval).
        trunc: uint8 [n_sessions] output.

    Returns:
        Number of rows needed (may exceed capacity: then retry with that size).
    """
    np.random.seed(seed)
    n = 0
    ipid = np.zeros(2, np.int64)
    for j in range(which.shape[0]):
        s = which[j]
        p = svc[s]
        t = start[s]
        answered = close[s] != _CLOSE_SYN_UNANSWERED
        ipid[0] = _randint(0, 65535)
        ipid[1] = _randint(0, 65535)
        nreq = _randint(int(params[p, _P_REQ_MIN]), int(params[p, _P_REQ_MAX]))
        icmp = kind[s] == _KIND_ICMP
        for e in range(nreq):
            if e > 0:
                t += _uniform_ns(params[p, _P_THINK_MIN], params[p, _P_THINK_MAX])
            if t >= end_ns:
                trunc[s] = 1
                break
            if icmp:
                size = int(params[p, _P_REQB_MIN])
                n = _emit(plan, n, end_ns, trunc, ipid, s, t, 0, 8, e + 1, 0, 0, size, 0, 1)
                if answered:
                    n = _emit(plan, n, end_ns, trunc, ipid, s, t + hs[s], 1, 0, e + 1, 0, 0, size, 0, 1)
            else:
                req = _log_uniform(params[p, _P_REQB_MIN], params[p, _P_REQB_MAX])
                n = _emit(plan, n, end_ns, trunc, ipid, s, t, 0, 0, 0, 0, 0, req, 0, 17)
                if answered:
                    t += hs[s] + _uniform_ns(params[p, _P_SRV_MIN], params[p, _P_SRV_MAX])
                    resp = _log_uniform(params[p, _P_RESPB_MIN], params[p, _P_RESPB_MAX])
                    n = _emit(plan, n, end_ns, trunc, ipid, s, t, 1, 0, 0, 0, 0, resp, 0, 17)
    return n

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

Each request and response of a service with an application protocol is one message: its data rows
carry the exchange number, their offset in the message and its length (the frame builder fills the
bytes). The server's time before a response comes from the service, or from a contention window
(``_server_ns``). UDP and ICMP conversations are planned by :mod:`cloudtap.synth._plan_dgram`; the
shared helpers live in :mod:`cloudtap.synth._plan_common`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from cloudtap._kernel_opts import KERNEL_OPTS
from cloudtap.synth._plan_common import (
    _ACK,
    _C_MLEN,
    _CLOSE_CLIENT_RST,
    _CLOSE_FIN,
    _CLOSE_SERVER_REFUSED,
    _CLOSE_SERVER_RST,
    _CLOSE_SYN_UNANSWERED,
    _FIN,
    _INIT_FLIGHT,
    _KIND_BULK,
    _KIND_SCAN,
    _MAX_FLIGHT,
    _MIN_RTO_NS,
    _P_APP,
    _P_CLOSE_BY_SERVER,
    _P_LOSS,
    _P_REQ_MAX,
    _P_REQ_MIN,
    _P_REQB_MAX,
    _P_REQB_MIN,
    _P_RESPB_MAX,
    _P_RESPB_MIN,
    _P_THINK_MAX,
    _P_THINK_MIN,
    _PSH,
    _RST,
    _SYN,
    _U32,
    _WIN_C,
    _WIN_S,
    _WIN_SYN_C,
    _WIN_SYN_S,
    _emit,
    _log_uniform,
    _message,
    _no_runt,
    _randint,
    _server_ns,
    _uniform_ns,
)


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
    slow,
    win,
    win_srv,
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
        slow, win, win_srv: contention effect of each session (-1: none), windows (effect, from, to)
            and their server time range in ns (see :func:`_server_ns`).
        hs_times: int64 [n_sessions, 3] output: SYN, SYN-ACK, ACK times (-1 if not sent).
        trunc: uint8 [n_sessions] output: 1 when a packet fell past end_ns.

    Returns:
        Number of rows needed (may exceed capacity: then retry with that size).
    """
    np.random.seed(seed)
    n = 0
    ipid = np.zeros(6, np.int64)
    for j in range(which.shape[0]):
        s = which[j]
        p = svc[s]
        t = start[s]
        h_s = hs[s]
        h_c = hc[s]
        c = int(close[s])
        k = int(kind[s])
        app = int(params[p, _P_APP])
        ipid[_C_MLEN] = 0
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
                _message(ipid, app, e, req, seq_c, 0)
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
                srv, slowed = _server_ns(params, p, t, slow[s], win, win_srv)
                t += srv + 1000
                if c == _CLOSE_SERVER_RST and e == nreq - 1:
                    n = _emit(plan, n, end_ns, trunc, ipid, s, t, 1, _RST | _ACK, seq_s, seq_c, 0, 0, 0, 6)
                    reset = True
                    break
                resp = _no_runt(_log_uniform(params[p, _P_RESPB_MIN], params[p, _P_RESPB_MAX]), mss)
                zw_at = _randint(0, (resp + mss - 1) // mss - 1) if e == zw_ex else -1
                _message(ipid, app, e, resp, seq_s, slowed)
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
        ipid[_C_MLEN] = 0
        t += _randint(20_000, 500_000)
        by_server = np.random.random() < params[p, _P_CLOSE_BY_SERVER]
        n = _close(plan, n, end_ns, trunc, ipid, s, t, c, by_server, h_s, h_c, seq_c, seq_s)
    return n

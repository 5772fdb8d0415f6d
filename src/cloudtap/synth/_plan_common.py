# mypy: disable-error-code="no-untyped-def, assignment, call-overload, untyped-decorator"
"""Constants and per-packet helpers shared by the planning kernels (:mod:`cloudtap.synth._plan_kernels`)."""

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
_P_APP = 12
# session context slots after the two IP ids
_C_XID, _C_MLEN, _C_MSEQ, _C_SLOW = 2, 3, 4, 5


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
    """Append one packet row (or count it past capacity); drop it when at/after end_ns.

    ``ipid`` is the session's context: IP ids of both directions, then the message being sent
    (``_C_XID`` exchange, ``_C_MLEN`` length, ``_C_MSEQ`` its first sequence number; see ``_message``).
    """
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
        if plen > 0 and ipid[_C_MLEN] > 0:
            r.xid = ipid[_C_XID]
            r.mlen = ipid[_C_MLEN]
            r.moff = (seq - ipid[_C_MSEQ]) & _U32
            r.slow = ipid[_C_SLOW]
    ipid[d] += 1
    return n + 1


@njit(**KERNEL_OPTS)
def _message(ctx, app, xid, mlen, seq, slow):
    """The next data sent belong to message ``xid`` of ``mlen`` bytes from ``seq`` (no app: fill bytes)."""
    ctx[_C_XID] = xid
    ctx[_C_MLEN] = mlen if app > 0 else 0
    ctx[_C_MSEQ] = seq
    ctx[_C_SLOW] = slow


@njit(**KERNEL_OPTS)
def _server_ns(params, p, t, slow, win, win_srv):
    """(server think time in ns, 1 if slowed) of an exchange at ``t``: ``win_srv``'s range inside a
    window of effect ``slow``.

    ``win`` rows are (effect, from ns, to ns); ``slow`` is the session's effect (-1: none).
    """
    lo, hi = params[p, _P_SRV_MIN], params[p, _P_SRV_MAX]
    inside = 0
    if slow >= 0:
        for w in range(win.shape[0]):
            if win[w, 0] == slow and win[w, 1] <= t < win[w, 2]:
                lo, hi = win_srv[w, 0], win_srv[w, 1]
                inside = 1
                break
    return _uniform_ns(lo, hi), inside

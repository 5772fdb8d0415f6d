# mypy: disable-error-code="no-untyped-def, assignment, call-overload, untyped-decorator"
"""Numba kernel planning UDP request/response and ICMP echo conversations (see :mod:`cloudtap.synth._plan_kernels`)."""

from __future__ import annotations

import numpy as np
from numba import njit

from cloudtap._kernel_opts import KERNEL_OPTS
from cloudtap.synth._plan_common import (
    _C_MLEN,
    _CLOSE_SYN_UNANSWERED,
    _KIND_ICMP,
    _P_APP,
    _P_REQ_MAX,
    _P_REQ_MIN,
    _P_REQB_MAX,
    _P_REQB_MIN,
    _P_RESPB_MAX,
    _P_RESPB_MIN,
    _P_THINK_MAX,
    _P_THINK_MIN,
    _emit,
    _log_uniform,
    _message,
    _randint,
    _server_ns,
    _uniform_ns,
)


@njit(**KERNEL_OPTS)
def plan_dgram(plan, seed, end_ns, which, start, kind, close, svc, hs, params, slow, win, win_srv, trunc):
    """Plan UDP request/response and ICMP echo conversations (``close`` 4 = no replies).

    Args:
        plan: PLAN_DTYPE output rows (capacity).
        seed: generator seed.
        end_ns: packets at/after this time are dropped.
        which: int64 indices of the sessions to plan.
        start, kind, close, svc, hs: per-session inputs.
        params: float64 [n_services, N_PARAMS] table (ICMP: think = echo interval).
        slow, win, win_srv: contention effects, as for :func:`plan_tcp`.
        trunc: uint8 [n_sessions] output.

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
        answered = close[s] != _CLOSE_SYN_UNANSWERED
        ipid[0] = _randint(0, 65535)
        ipid[1] = _randint(0, 65535)
        nreq = _randint(int(params[p, _P_REQ_MIN]), int(params[p, _P_REQ_MAX]))
        icmp = kind[s] == _KIND_ICMP
        app = int(params[p, _P_APP])
        ipid[_C_MLEN] = 0
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
                _message(ipid, app, e, req, 0, 0)
                n = _emit(plan, n, end_ns, trunc, ipid, s, t, 0, 0, 0, 0, 0, req, 0, 17)
                if answered:
                    srv, slowed = _server_ns(params, p, t, slow[s], win, win_srv)
                    t += hs[s] + srv
                    resp = _log_uniform(params[p, _P_RESPB_MIN], params[p, _P_RESPB_MAX])
                    _message(ipid, app, e, resp, 0, slowed)
                    n = _emit(plan, n, end_ns, trunc, ipid, s, t, 1, 0, 0, 0, 0, resp, 0, 17)
    return n

"""``lb_imbalance``: a service's clients spread unevenly over its backends.

A service is the inventory's ``server_service_id`` when known, else the server port + protocol inside
one server subnet. Over the last ``lb_window_minutes``, flows opened to each backend (server IP) are
counted; with at least two backends and ``lb_min_flows`` flows, a backend holding ``lb_share_factor``
times the even share and ``lb_sigmas`` Poisson sigmas above it makes the service imbalanced.
"""

from __future__ import annotations

import numpy as np

from cloudtap.server.findings.context import Cycle
from cloudtap.server.findings.edges import read_edges
from cloudtap.server.findings.model import Detection
from cloudtap.server.findings.store import iso_s


def detect_lb(cycle: Cycle) -> list[Detection]:
    """Imbalanced services over the window ending with the cycle's minute."""
    cfg = cycle.config
    w0 = cycle.t1 - cfg.lb_window_minutes * 60
    e = read_edges(cycle.store, w0, cycle.t1)
    if not len(e):
        return []
    service = np.where(e["server_service_id"] > 0, e["server_service_id"].astype(np.int64) << 32,
                       e["server_subnet_id"].astype(np.int64))  # fmt: skip
    group_key = np.stack([service, e["server_port"].astype(np.int64), e["proto"].astype(np.int64)], axis=1)
    groups, g_inv = np.unique(group_key, axis=0, return_inverse=True)
    g_inv = g_inv.reshape(-1)
    backend_key = np.stack([g_inv.astype(np.int64), np.unique(e["server_ip"].astype(str), return_inverse=True)[1]
                            .reshape(-1).astype(np.int64)], axis=1)  # fmt: skip
    backends, b_inv = np.unique(backend_key, axis=0, return_inverse=True)
    flows = np.bincount(b_inv.reshape(-1), weights=e["opened"], minlength=len(backends))
    b_group = backends[:, 0]
    n = np.bincount(b_group, minlength=len(groups))
    total = np.bincount(b_group, weights=flows, minlength=len(groups))
    top = np.zeros(len(groups))
    np.maximum.at(top, b_group, flows)
    even = total / np.maximum(n, 1)
    sig = (top - even) / np.sqrt(np.maximum(even, 1.0))
    bad = np.flatnonzero((n >= 2) & (total >= cfg.lb_min_flows) & (top >= cfg.lb_share_factor * even)
                         & (sig >= cfg.lb_sigmas))  # fmt: skip
    out = []
    for g in bad:
        mine = np.flatnonzero(b_group == g)
        order = mine[np.argsort(-flows[mine], kind="stable")]
        rows = [np.flatnonzero(b_inv.reshape(-1) == b)[0] for b in order]
        ips = [str(e["server_ip"][r]) for r in rows]
        first = e.row(int(rows[0]))
        service_id = int(first["server_service_id"])
        where = f"service:{service_id}" if service_id else f"subnet:{int(first['server_subnet_id'])}"
        s = cycle.subjects([{**first, "client_ip": "", "client_project_id": 0, "client_vm_id": 0,
                             "server_ip": where, "server_vm_id": 0}], kind="service")[0]  # fmt: skip
        shares = {ip: round(float(flows[b] / total[g]), 4) for ip, b in zip(ips, order, strict=True)}
        vms = cycle.names.names("vm", [int(e["server_vm_id"][r]) for r in rows], cycle.at_ns)
        named = {vms.get(int(e["server_vm_id"][r]), ip): shares[ip] for r, ip in zip(rows, ips, strict=True)}
        top_name = next(iter(named))
        out.append(Detection(
            kind="lb_imbalance", severity="warning", subject=s, time_from=cycle.t0, time_to=cycle.t1,
            summary=f"{s.label}: {top_name} takes {named[top_name]:.0%} of {int(total[g])} flows over "
                    f"{int(n[g])} backends (even share {1 / n[g]:.0%})",
            figures={"flows": float(total[g]), "backends": int(n[g]), "shares": named,
                     "top_backend": top_name, "top_share": named[top_name], "sigmas": round(float(sig[g]), 1)},
            baseline={"even_share": round(1 / float(n[g]), 4), "window_minutes": cfg.lb_window_minutes,
                      "measured_from": iso_s(w0)},
            reproduce=f"cloudtap topology {cycle.window_args(w0)} --level ip --port {s.server_port} --by-port",
        ))  # fmt: skip
    return out

"""``lb_imbalance``: a service's clients spread unevenly over its backends, or a backend left out.

A service is the inventory's ``server_service_id`` when known, else the server port + protocol inside
one server subnet. Over the last ``lb_window_minutes``, flows opened to each backend (server IP) are
counted. With at least ``lb_min_flows`` flows the service is imbalanced when:

* **one backend takes too much**: with two or more backends, one holds ``lb_share_factor`` times the even
  share and ``lb_sigmas`` Poisson sigmas above it; or
* **a backend takes nothing**: a server IP that took flows of the service in the last
  ``lb_idle_lookback_hours`` (``edge_1h``) took none in the window, although its even share of the
  window's flows is at least ``lb_sigmas²`` (a Poisson count that large is never 0 by chance: its
  mean is ``lb_sigmas`` sigmas above 0). A backend left out of the pool, failing its health checks, or
  scaled away looks like this; the finding ends when it takes flows again or drops out of the lookback.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cloudtap.server.findings.context import Cycle
from cloudtap.server.findings.edges import Edges, read_edges
from cloudtap.server.findings.model import Detection
from cloudtap.server.findings.store import iso_s
from cloudtap.server.store.ddl import ident, ip_text_sql

#: A service's key: the inventory service id (shifted above any subnet id), else the server subnet.
_SERVICE_SQL = (
    "if(server_service_id > 0, bitShiftLeft(toInt64(server_service_id), 32), toInt64(server_subnet_id))"
)


def _service(e: Edges) -> np.ndarray:
    return np.where(e["server_service_id"] > 0, e["server_service_id"].astype(np.int64) << 32,
                    e["server_subnet_id"].astype(np.int64))  # fmt: skip


def recent_backends(cycle: Cycle, t0: int, t1: int) -> dict[tuple[int, int, int], dict[str, int]]:
    """(service, port, proto) -> {server IP: its VM id} of backends that took flows in ``[t0, t1)`` (hours)."""
    sql = (
        f"SELECT {_SERVICE_SQL} AS service, server_port, proto, {ip_text_sql('server_ip')} AS ip, "
        f"max(server_vm_id) AS vm, sum(flows_opened) AS opened FROM {ident(cycle.store.database)}.edge_1h "
        f"WHERE time >= toStartOfHour(toDateTime({{t0:Int64}}, 'UTC')) AND time < toDateTime({{t1:Int64}}, 'UTC') "
        f"GROUP BY service, server_port, proto, ip HAVING opened > 0"
    )
    out: dict[tuple[int, int, int], dict[str, int]] = {}
    for row in cycle.store.query_arrow(sql, {"t0": int(t0), "t1": int(t1)}).to_pylist():
        out.setdefault((row["service"], row["server_port"], row["proto"]), {})[row["ip"]] = int(row["vm"])
    return out


def detect_lb(cycle: Cycle) -> list[Detection]:
    """Imbalanced services over the window ending with the cycle's minute."""
    cfg = cycle.config
    w0 = cycle.t1 - cfg.lb_window_minutes * 60
    e = read_edges(cycle.store, w0, cycle.t1)
    if not len(e):
        return []
    group_key = np.stack(
        [_service(e), e["server_port"].astype(np.int64), e["proto"].astype(np.int64)], axis=1
    )
    groups, g_inv = np.unique(group_key, axis=0, return_inverse=True)
    g_inv = g_inv.reshape(-1)
    server_ips, ip_inv = np.unique(e["server_ip"].astype(str), return_inverse=True)
    backend_key = np.stack([g_inv.astype(np.int64), ip_inv.reshape(-1).astype(np.int64)], axis=1)
    backends, b_inv = np.unique(backend_key, axis=0, return_inverse=True)
    b_inv = b_inv.reshape(-1)
    flows = np.bincount(b_inv, weights=e["opened"], minlength=len(backends))
    b_group = backends[:, 0]
    n = np.bincount(b_group, minlength=len(groups))
    total = np.bincount(b_group, weights=flows, minlength=len(groups))
    top = np.zeros(len(groups))
    np.maximum.at(top, b_group, flows)
    even = total / np.maximum(n, 1)
    sig = (top - even) / np.sqrt(np.maximum(even, 1.0))
    busy = total >= cfg.lb_min_flows
    heavy = busy & (n >= 2) & (top >= cfg.lb_share_factor * even) & (sig >= cfg.lb_sigmas)
    idle: dict[int, dict[str, int]] = {}
    if cfg.lb_idle_lookback_hours > 0 and busy.any():
        seen = recent_backends(cycle, cycle.t1 - int(cfg.lb_idle_lookback_hours * 3600), cycle.t1)
        here: dict[int, set[str]] = {}  # group -> its backends in the window (one pass over the backends)
        for g, ip in backends.tolist():
            here.setdefault(g, set()).add(str(server_ips[ip]))
        for g in np.flatnonzero(busy).tolist():
            known = seen.get(tuple(int(x) for x in groups[g]), {})
            gone = {ip: vm for ip, vm in known.items() if ip not in here[g]}
            if gone and total[g] / (n[g] + len(gone)) >= cfg.lb_sigmas**2:
                idle[g] = gone
    out = []
    for g in sorted(set(np.flatnonzero(heavy).tolist()) | set(idle)):
        mine = np.flatnonzero(b_group == g)
        order = mine[np.argsort(-flows[mine], kind="stable")]
        rows = [int(np.flatnonzero(b_inv == b)[0]) for b in order]
        out.append(
            _detection(cycle, e, w0, rows, flows[order], idle.get(g, {}), bool(heavy[g]), float(sig[g]))
        )
    return out


def _detection(cycle: Cycle, e: Edges, w0: int, rows: list[int], flows: np.ndarray, gone: dict[str, int],
               heavy: bool, sigmas: float) -> Detection:  # fmt: skip
    """One service's finding: ``rows`` are an edge row per active backend (busiest first), ``gone`` the idle ones."""
    cfg = cycle.config
    total = float(flows.sum())
    backends = len(rows) + len(gone)
    ips = [str(e["server_ip"][r]) for r in rows] + sorted(gone)
    vm_ids = [int(e["server_vm_id"][r]) for r in rows] + [gone[ip] for ip in sorted(gone)]
    vms = cycle.names.names("vm", vm_ids, cycle.at_ns)
    names = [vms.get(vm, ip) for vm, ip in zip(vm_ids, ips, strict=True)]
    shares = [round(float(f / total), 4) for f in flows] + [0.0] * len(gone)
    named = dict(zip(names, shares, strict=True))
    first = e.row(rows[0])
    service_id = int(first["server_service_id"])
    where = f"service:{service_id}" if service_id else f"subnet:{int(first['server_subnet_id'])}"
    s = cycle.subjects([{**first, "client_ip": "", "client_project_id": 0, "client_vm_id": 0,
                         "server_ip": where, "server_vm_id": 0}], kind="service")[0]  # fmt: skip
    parts = []
    if gone:
        left = names[len(rows) :]
        parts.append(f"{', '.join(left)} took no new flows in {cfg.lb_window_minutes} min while "
                     f"{len(rows)} other backend(s) took {int(total)} (~{total / backends:.0f} each if even)")  # fmt: skip
    if heavy:
        parts.append(f"{names[0]} takes {shares[0]:.0%} of {int(total)} flows over {len(rows)} backends "
                     f"(even share {1 / len(rows):.0%})")  # fmt: skip
    figures: dict[str, Any] = {"flows": total, "backends": backends, "shares": named, "top_backend": names[0],
                               "top_share": shares[0], "sigmas": round(sigmas, 1),
                               "idle_backends": names[len(rows):]}  # fmt: skip
    return Detection(
        kind="lb_imbalance", severity="warning", subject=s, time_from=cycle.t0, time_to=cycle.t1,
        summary=f"{s.label}: " + "; ".join(parts), figures=figures,
        baseline={"even_share": round(1 / backends, 4), "window_minutes": cfg.lb_window_minutes,
                  "measured_from": iso_s(w0), "backends_seen_since": iso_s(cycle.t1 - int(cfg.lb_idle_lookback_hours * 3600))},
        reproduce=f"cloudtap topology {cycle.window_args(w0)} --level ip --port {s.server_port} --by-port",
    )  # fmt: skip

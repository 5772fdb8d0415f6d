"""``slow_requests``: an edge (client -> server:port, application protocol) whose p99 latency in the minute
is far above its own recent p99s.

Read from ``request_1m`` (the p99 merged from each row's t-digest): an edge with at least
``slow_min_requests`` answered requests in the minute, a p99 of at least ``slow_min_ms``, at least
``slow_factor`` times its baseline and a robust z-score above ``slow_k``, and at least ``slow_min_slow``
of its requests in the minute slower than ``slow_factor`` times the baseline (counted in ``request_log``:
one outlier among few requests is not a slowdown, however high it puts the p99). The baseline is the
edge's p99 of each of its last ``slow_history_minutes`` minutes that had at least ``BASELINE_MIN_ANSWERED``
answered requests (idle minutes have no latency and are left out): their median, and 1.4826·MAD (else
1.2533·mean absolute deviation, else a tenth of the median) as sigma; at least ``slow_baseline_minutes``
such minutes. A request seen by several agents counts once: per edge and minute, the agent that saw most.
Evidence: the slowest resources of the edge in the minute from ``request_log`` (count, errors, p99, max).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cloudtap.server.analyse.robust import MAD_SCALE, MEAN_AD_SCALE
from cloudtap.server.findings.context import Cycle
from cloudtap.server.findings.model import Detection, Severity
from cloudtap.server.store.ddl import ident, ip_text_sql
from cloudtap.server.store.request_columns import QUANTILES_SQL

#: A minute's p99 enters the baseline when the edge answered at least this many requests in it.
BASELINE_MIN_ANSWERED = 5
#: Slowest resources kept as evidence per finding.
EVIDENCE_ROWS = 5
_KEY = "cityHash64(client_ip, server_ip, server_port, l7_proto)"
_IDS = ("client_project_id", "server_project_id", "client_vm_id", "server_vm_id", "client_service_id",
        "server_service_id")  # fmt: skip
#: Output aliases that would shadow stored columns inside the aggregation -> the names used here.
_RENAMED = {"c_ip": "client_ip", "s_ip": "server_ip", "port": "server_port", "l7": "l7_proto"}
_RANGE = "time >= toDateTime({t0:Int64}, 'UTC') AND time < toDateTime({t1:Int64}, 'UTC')"


def detect_slow_requests(cycle: Cycle) -> list[Detection]:
    """Edges whose p99 latency in the cycle's minute is far above their own last hour."""
    cfg = cycle.config
    now = _busiest_agent(_per_agent(cycle.store, cycle.t0, cycle.t1, minute=False), ("key",))
    if not now:
        return []
    p99 = now["p99"]
    candidates = (now["answered"] >= cfg.slow_min_requests) & (p99 >= cfg.slow_min_ms)
    if not candidates.any():
        return []
    keys = now["key"][candidates]
    hist = _history(cycle, keys)
    med, sigma, minutes = _baseline(hist)
    rows = {k: v[candidates] for k, v in now.items()}
    z = (rows["p99"] - med) / sigma
    hit = np.flatnonzero(
        (minutes >= cfg.slow_baseline_minutes) & (rows["p99"] >= cfg.slow_factor * med) & (z > cfg.slow_k)
    )
    if not hit.size:
        return []
    edges = [(int(rows["key"][i]), str(rows["agent_id"][i])) for i in hit]
    slow = _slow_counts(cycle, edges, [int(cfg.slow_factor * med[i] * 1000) for i in hit])
    hit = hit[np.array([slow.get(k, 0) >= cfg.slow_min_slow for k, _ in edges], bool)]
    if not hit.size:
        return []
    hit = hit[np.argsort(-rows["p99"][hit], kind="stable")]
    evidence = _slowest(cycle, [(int(rows["key"][i]), str(rows["agent_id"][i])) for i in hit])
    plain = [{k: (v[i].item() if hasattr(v[i], "item") else v[i]) for k, v in rows.items()} for i in hit]
    out = []
    for i, row, s in zip(hit, plain, cycle.subjects([{**r, "proto": None} for r in plain]), strict=True):
        s.label = s.label.removesuffix("/") + f" {row['l7_proto']}"
        factor = row["p99"] / max(med[i], 1e-9)
        severity: Severity = (
            "critical"
            if factor >= 3 * cfg.slow_factor and row["answered"] >= 5 * cfg.slow_min_requests
            else "warning"
        )
        out.append(Detection(
            kind="slow_requests", severity=severity, subject=s, time_from=cycle.t0, time_to=cycle.t1,
            summary=f"slow requests on {s.label}: p99 {row['p99']:.3g} ms over {int(row['answered'])} answered "
                    f"requests, {factor:.1f}x its last {cfg.slow_history_minutes} min (median p99 {med[i]:.3g} ms)",
            figures={"p99_ms": round(row["p99"], 3), "p50_ms": round(row["p50"], 3), "max_ms": row["max_ms"],
                     "requests": int(row["requests"]), "answered": int(row["answered"]), "errors": int(row["errors"]),
                     "slow": slow[int(row["key"])],
                     "l7_proto": row["l7_proto"], "z": round(float(z[i]), 2), "factor": round(factor, 2),
                     "slowest": evidence.get(int(row["key"]), [])},
            baseline={"minutes": cfg.slow_history_minutes, "minutes_with_requests": int(minutes[i]),
                      "median_p99_ms": round(float(med[i]), 3), "sigma_ms": round(float(sigma[i]), 3),
                      "k": cfg.slow_k, "factor": cfg.slow_factor},
            reproduce=f"cloudtap query top --table request_log {cycle.window_args()} -f client_ip={s.client_ip} "
                      f"-f server_ip={s.server_ip} -f server_port={s.server_port} -f l7_proto={row['l7_proto']} "
                      "--group resource --by latency_p99,latency_max,requests,errors",
        ))  # fmt: skip
    return out


def _per_agent(
    store: Any, t0: int, t1: int, minute: bool, keys: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Per edge (and minute when ``minute``) and agent: counts, p50/p99 and max latency (ms) of ``request_1m``."""
    by_minute = "toUnixTimestamp(time) AS minute, " if minute else ""
    group_minute = "minute, " if minute else ""
    only = f" AND {_KEY} IN {{keys:Array(UInt64)}}" if keys is not None else ""
    ids = ", ".join(f"max({c}) AS {c}" for c in _IDS)
    sql = (
        f"SELECT {by_minute}{_KEY} AS key, any({ip_text_sql('client_ip')}) AS c_ip, "
        f"any({ip_text_sql('server_ip')}) AS s_ip, any(server_port) AS port, any(l7_proto) AS l7, "
        f"agent_id, sum(requests) AS requests, sum(answered) AS answered, "
        f"sum(client_errors + server_errors + timeouts) AS errors, max(latency_max_us) / 1000 AS max_ms, "
        f"quantilesTDigestMerge({QUANTILES_SQL})(latency_digest) AS q, {ids} "
        f"FROM {ident(store.database)}.request_1m WHERE {_RANGE}{only} GROUP BY {group_minute}key, agent_id"
    )
    params: dict[str, Any] = {"t0": int(t0), "t1": int(t1)}
    if keys is not None:
        params["keys"] = [int(k) for k in keys]
    table = store.query_arrow(sql, params)
    table = table.rename_columns([_RENAMED.get(n, n) for n in table.column_names])
    cols: dict[str, np.ndarray] = {}
    for name in table.column_names:
        if name == "q":
            q = np.array(table["q"].to_pylist(), dtype=np.float64).reshape(-1, 3) / 1000
            cols["p50"], cols["p99"] = q[:, 0], q[:, 2]
        elif name in ("client_ip", "server_ip", "l7_proto", "agent_id"):
            cols[name] = np.asarray(table[name].to_pylist(), dtype=object)
        else:
            cols[name] = table[name].to_numpy(zero_copy_only=False)
    return cols


def _busiest_agent(cols: dict[str, np.ndarray], by: tuple[str, ...]) -> dict[str, np.ndarray]:
    """One row per ``by`` group: the agent with most requests (empty dict when there are no rows)."""
    if not cols or not len(cols["key"]):
        return {}
    order = np.lexsort((-cols["requests"].astype(np.float64), *(cols[b] for b in reversed(by))))
    grouped = np.stack([cols[b][order].astype(np.uint64) for b in by], axis=1)
    first = np.ones(len(order), bool)
    first[1:] = (grouped[1:] != grouped[:-1]).any(axis=1)
    pick = order[first]
    return {k: v[pick] for k, v in cols.items()}


def _history(cycle: Cycle, keys: np.ndarray) -> np.ndarray:
    """``len(keys) x slow_history_minutes`` p99s (ms) of the minutes before the cycle; NaN: too few answered."""
    minutes = cycle.config.slow_history_minutes
    h0 = cycle.t0 - minutes * 60
    out = np.full((len(keys), minutes), np.nan)
    rows = _busiest_agent(_per_agent(cycle.store, h0, cycle.t0, minute=True, keys=keys), ("key", "minute"))
    if not rows:
        return out
    usable = rows["answered"] >= BASELINE_MIN_ANSWERED
    order = np.argsort(keys, kind="stable")
    pos = np.minimum(np.searchsorted(keys[order], rows["key"]), len(keys) - 1)
    found = (keys[order][pos] == rows["key"]) & usable
    col = ((rows["minute"].astype(np.int64) - h0) // 60).clip(0, minutes - 1)
    out[order[pos[found]], col[found]] = rows["p99"][found]
    return out


def _baseline(hist: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(median p99, sigma, minutes with a p99) per row; rows without any minute get median inf (no finding)."""
    minutes = np.sum(~np.isnan(hist), axis=1)
    med = np.full(len(hist), np.inf)
    sigma = np.ones(len(hist))
    have = minutes > 0
    if have.any():
        h = hist[have]
        m = np.nanmedian(h, axis=1)
        dev = np.abs(h - m[:, None])
        scale = np.nanmedian(dev, axis=1) * MAD_SCALE
        scale = np.where(scale > 0, scale, np.nanmean(dev, axis=1) * MEAN_AD_SCALE)
        scale = np.where(scale > 0, scale, 0.1 * m)
        med[have], sigma[have] = m, np.where(scale > 0, scale, 1e-3)
    return med, sigma, minutes


def _log_where(cycle: Cycle) -> str:
    """``request_log`` rows of the cycle's minute on the listed ``(edge key, agent)`` pairs."""
    return (
        f"FROM {ident(cycle.store.database)}.request_log "
        f"WHERE req >= toDateTime({{t0:Int64}}, 'UTC') AND req < toDateTime({{t1:Int64}}, 'UTC') "
        f"AND ({_KEY}, agent_id) IN {{edges:Array(Tuple(UInt64, String))}}"
    )


def _slow_counts(cycle: Cycle, edges: list[tuple[int, str]], threshold_us: list[int]) -> dict[int, int]:
    """Per edge key: its requests in the minute at least its ``threshold_us`` slow."""
    table = cycle.store.query_arrow(
        f"SELECT {_KEY} AS key, countIf(latency_us >= transform(key, {{keys:Array(UInt64)}}, "
        f"{{limits:Array(Int64)}}, toInt64(9223372036854775807))) AS slow {_log_where(cycle)} GROUP BY key",
        {
            "t0": cycle.t0,
            "t1": cycle.t1,
            "edges": edges,
            "keys": [k for k, _ in edges],
            "limits": threshold_us,
        },
    )
    return {int(k): int(n) for k, n in zip(table["key"].to_pylist(), table["slow"].to_pylist(), strict=True)}


def _slowest(cycle: Cycle, edges: list[tuple[int, str]]) -> dict[int, list[dict[str, Any]]]:
    """Per edge key: its slowest resources in the minute (as seen by the agent its figures come from)."""
    table = cycle.store.query_arrow(
        f"SELECT {_KEY} AS key, request_type, resource, count() AS requests, countIf(status != 'ok') AS errors, "
        f"quantileTDigestIf(0.99)(latency_us, latency_us >= 0) / 1000 AS p99_ms, "
        f"maxIf(latency_us, latency_us >= 0) / 1000 AS max_ms {_log_where(cycle)} "
        f"GROUP BY key, request_type, resource ORDER BY key, max_ms DESC, requests DESC LIMIT {EVIDENCE_ROWS} BY key",
        {"t0": cycle.t0, "t1": cycle.t1, "edges": edges},
    )  # fmt: skip
    out: dict[int, list[dict[str, Any]]] = {}
    for r in table.to_pylist():
        key = int(r.pop("key"))
        r["p99_ms"], r["max_ms"] = round(float(r["p99_ms"]), 3), round(float(r["max_ms"]), 3)
        out.setdefault(key, []).append(r)
    return out

"""Compare and backtest over N days of 1-min edge metrics for E edges (issue 6 target: < 2 s each).

Rows are generated straight into ``edge_1m`` through ``ClickHouseStore.insert`` (kind ``edges_60s``, one
batch per day; the views fill ``edge_1h`` / ``endpoint_*`` as in production). Every edge is active every
minute with a diurnal level plus noise; edge 0 (10.0.0.1 -> 10.9.0.1:873) also pushes a backup at the top
of every hour for 3 minutes.

    python bench/analysis/compare_backtest.py --edges 1000 --days 30 --data /tmp/bench-analysis

Timed (median of ``--repeat`` runs, wall clock and this process's CPU time, store warm): compare of the last hour against the same hour
yesterday (all edges, endpoint ranking and burst detection of the top 3 of each included), compare of the
last hour against the 24 h before it and against all the history before it, backtest of the backup edge and
of a port-only signature (every edge scanned) over the last day and over all history. Each case also
records the time spent in ClickHouse (``sql_seconds``) and the number of queries. Results go to
``bench/results/analysis_compare_backtest.json``, one entry per (edges, days) under ``runs``.

    python bench/analysis/compare_backtest.py --edges 10000 --days 3 --data /tmp/bench-an10k --reuse
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

NS = 1_000_000_000
DAY_S = 86400
START_S = 1_767_225_600  # 2026-01-01T00:00:00Z


def day_table(day: int, edges: int, rng: np.random.Generator) -> pa.Table:
    """One day of 1-min rows for every edge."""
    minutes = np.arange(1440, dtype=np.int64)
    t = START_S + day * DAY_S + minutes * 60
    e = np.repeat(np.arange(edges), 1440)
    tt = np.tile(t, edges)
    level = 2e5 * (1.3 + np.sin(2 * np.pi * (tt % DAY_S) / DAY_S))
    scale = 1.0 + (np.arange(edges) % 50)[e]
    c2s = rng.gamma(4.0, level * scale / 4.0).astype(np.uint64)
    s2c = (c2s * rng.uniform(0.5, 3.0, len(e))).astype(np.uint64)
    backup = (e == 0) & ((tt % 3600) < 180)
    c2s[backup] += np.uint64(15_000_000)
    n = len(e)
    clients = np.array([f"10.{i // 62500 % 8}.{i // 250 % 250}.{i % 250 + 1}" for i in range(edges)], dtype=object)
    servers = np.array([f"10.{9 + i % 3}.{i // 250 % 250}.{i % 250 + 1}" for i in range(max(1, edges // 4))], dtype=object)
    sidx = np.arange(edges) % len(servers)
    ports = np.array([873] + [5432, 443, 80, 6379, 8080] * (edges // 5 + 1), dtype=np.uint16)[:edges]
    pkts = np.maximum(c2s // 1200, 1)

    def strings(pool: np.ndarray, idx: np.ndarray) -> pa.Array:
        return pa.DictionaryArray.from_arrays(pa.array(idx.astype(np.int32)), pa.array(pool, pa.string())).cast(pa.string())

    cols = {
        "time_ns": pa.array(tt * NS, pa.int64()),
        "client_ip": strings(clients, e),
        "server_ip": strings(servers, sidx[e]),
        "server_port": pa.array(ports[e]),
        "proto": pa.array(np.full(n, 6, np.uint8)),
        "vlan": pa.array(np.zeros(n, np.uint16)),
        "tunnel_id": pa.array(np.zeros(n, np.uint32)),
        "interface": pa.array(np.zeros(n, np.uint16)),
        "packets_c2s": pa.array(pkts),
        "packets_s2c": pa.array(np.maximum(s2c // 1200, 1)),
        "bytes_c2s": pa.array(c2s),
        "bytes_s2c": pa.array(s2c),
        "retrans": pa.array((rng.random(n) < 0.01).astype(np.uint64)),
        "flows_opened": pa.array(rng.poisson(3, n).astype(np.uint64)),
        "flows_closed": pa.array(rng.poisson(3, n).astype(np.uint64)),
        "flows_failed": pa.array((rng.random(n) < 0.005).astype(np.uint64)),
        "rtt_sum_us": pa.array(rng.uniform(100, 900, n)),
        "rtt_count": pa.array(np.ones(n, np.uint64)),
        "agent_id": pa.array(np.full(n, "bench", object), pa.string()),
        "interface_name": pa.array(np.full(n, "", object), pa.string()),
        "vm_domain": pa.array(np.full(n, "", object), pa.string()),
        "vm_mac": pa.array(np.full(n, "", object), pa.string()),
    }
    return pa.table(cols)


def timed(fn, repeat: int) -> tuple[float, float, object]:  # noqa: ANN001
    """(median wall s, median CPU s of this process: chDB's threads included, other jobs not), last result."""
    times, cpus, out = [], [], None
    for _ in range(repeat):
        c, t = time.process_time(), time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return statistics.median(times), statistics.median(cpus), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--edges", type=int, default=1000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--data", type=Path, default=Path("/tmp/bench-analysis"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--reuse", action="store_true", help="keep an existing store of the same size")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "results" / "analysis_compare_backtest.json")
    args = ap.parse_args()

    from cloudtap.server.analyse import CompareRequest, Signature, backtest, compare, parse_condition
    from cloudtap.server.store.base import BatchKey
    from cloudtap.server.store.clickhouse import ClickHouseStore

    if not args.reuse:
        shutil.rmtree(args.data, ignore_errors=True)
    store = ClickHouseStore(f"chdb://{args.data}", database="bench")
    store.migrate()
    have = store.query_arrow("SELECT count() AS n FROM bench.edge_1m").to_pylist()[0]["n"]
    rows = args.edges * 1440 * args.days
    load_s = 0.0
    if have != rows:
        rng = np.random.default_rng(6)
        t0 = time.perf_counter()
        for day in range(args.days):
            store.insert({"edges_60s": day_table(day, args.edges, rng)}, BatchKey("bench", day + 1))
            print(f"day {day + 1}/{args.days}: {time.perf_counter() - t0:.0f} s", flush=True)
        load_s = time.perf_counter() - t0
    end = START_S + args.days * DAY_S
    iso = lambda s: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(s))  # noqa: E731
    last_hour = {"time_from": iso(end - 3600), "time_to": iso(end)}
    results: dict[str, object] = {}
    edge_sig = Signature(filter={"ip": "10.0.0.1", "port": 873}, condition=parse_condition("bytes>10M"))
    port_sig = Signature(filter={"port": 873}, condition=parse_condition("z(bytes)>8"))
    cases = {
        "compare_last_hour_vs_yesterday": lambda: compare(store, CompareRequest(**last_hour, baseline="yesterday")),
        "compare_last_hour_vs_previous_24h": lambda: compare(
            store, CompareRequest(**last_hour, baseline_from=iso(end - 3600 - DAY_S), baseline_to=iso(end - 3600))),
        "compare_last_hour_vs_all_before": lambda: compare(
            store, CompareRequest(**last_hour, baseline_from=iso(START_S), baseline_to=iso(end - 3600))),
        "backtest_backup_edge_last_day": lambda: backtest(store, edge_sig, time_from=iso(end - DAY_S)),
        "backtest_backup_edge_all_history": lambda: backtest(store, edge_sig),
        "backtest_port_only_last_day": lambda: backtest(store, port_sig, time_from=iso(end - DAY_S)),
        "backtest_port_only_all_history": lambda: backtest(store, port_sig),
    }  # fmt: skip
    sql_log: list[float] = []
    query_arrow = store.query_arrow

    def counted(sql: str, parameters: dict | None = None) -> pa.Table:
        t = time.perf_counter()
        try:
            return query_arrow(sql, parameters)
        finally:
            sql_log.append(time.perf_counter() - t)

    store.query_arrow = counted  # type: ignore[method-assign]
    for name, fn in cases.items():
        fn()  # warm
        sql_log.clear()
        secs, cpu, out = timed(fn, args.repeat)
        detail: dict[str, object] = {"seconds": round(secs, 3), "cpu_seconds": round(cpu, 3), "sql_seconds": round(sum(sql_log) / args.repeat, 3),
                                     "queries": len(sql_log) // args.repeat}  # fmt: skip
        if name.startswith("compare"):
            top = out.edges[0]  # type: ignore[attr-defined]
            detail.update(top_edge=f"{top.source}->{top.target}:{top.server_port}", edges=out.counts["edges"],  # type: ignore[attr-defined]
                          baseline=out.baseline, baseline_table=getattr(out, "baseline_table", None), step_s=out.step_s)  # type: ignore[attr-defined]
        else:
            detail.update(occurrences=out.count, period=out.period.text if out.period else None,  # type: ignore[attr-defined]
                          buckets=out.buckets)  # type: ignore[attr-defined]
        results[name] = detail
        print(name, detail, flush=True)
    store.close()
    run = {
        "edges": args.edges, "days": args.days, "edge_1m_rows": rows, "load_seconds": round(load_s, 1) if load_s else None,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores", "repeat": args.repeat,
        "date": time.strftime("%Y-%m-%d"), "results": results,
    }  # fmt: skip
    runs = []
    if args.out.exists():
        old = json.loads(args.out.read_text())
        runs = [r for r in old.get("runs", []) if (r["edges"], r["days"]) != (args.edges, args.days)]
    report = {"runs": sorted([*runs, run], key=lambda r: (r["edges"], r["days"]))}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(run, indent=2))


if __name__ == "__main__":
    main()

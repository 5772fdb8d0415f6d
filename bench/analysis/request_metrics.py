"""Request-metric analyses over the request rollups, side by side with the same answers from the raw log.

Generates ``--services`` client -> server:port services, each answering ``--rate`` requests per second for
``--hours`` hours (lognormal latencies; service 0 gets 10x slower in the last half hour), inserted as kind
``requests`` through ``ClickHouseStore.insert`` (the views fill ``request_1s/1m/1h``), then times
(median of ``--repeat`` runs, wall clock and this process's CPU time, store warm):

* topology by ``latency_p99`` over the last hour (rollups, merged t-digests) vs the **raw log** peer: the
  same per-service counts and p99 from ``request_log`` with ``quantileExact`` (what an answer without the
  rollups costs);
* compare of the last 30 min against the 30 min before by ``latency_p99`` (three rollup queries);
* drill-down of service 0's server (request sections from the log, plus the edge sections);
* backtest ``latency_p99 > X`` per minute of service 0 over all history, vs the raw-log peer (per-minute
  ``quantileExact``).

Also the t-digest's accuracy: per service, the rollup p99 against the exact p99 of the same requests
(relative error, median and maximum over the services). Results: ``bench/results/analysis_request_metrics.json``.

    python bench/analysis/request_metrics.py --services 100 --hours 2 --rate 2 --data /tmp/bench-requests
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
START_S = 1_767_225_600  # 2026-01-01T00:00:00Z


def _strings(pool: list[str], idx: np.ndarray) -> pa.Array:
    return pa.DictionaryArray.from_arrays(pa.array(idx.astype(np.int32)), pa.array(pool, pa.string())).cast(
        pa.string()
    )


def hour_table(hour: int, hours: int, services: int, rate: float, rng: np.random.Generator) -> pa.Table:
    """One hour of requests of every service, as the agent ships them (records + annotations + ids)."""
    from cloudtap.l7.records import requests_to_arrow
    from cloudtap.schema.packet import IPV4_MAPPED_LO
    from cloudtap.schema.request import L7_MYSQL, REQ_OK, REQ_SERVER_ERROR, empty_requests

    n = int(services * 3600 * rate)
    svc = rng.integers(0, services, n)
    t0 = (START_S + hour * 3600) * NS
    req = t0 + rng.integers(0, 3600 * NS, n)
    slow = (svc == 0) & (req >= (START_S + hours * 3600 - 1800) * NS)
    base_us = 500.0 * (1 + svc % 20)
    latency = np.maximum(
        1, (base_us * np.where(slow, 10.0, 1.0) * rng.lognormal(0.0, 0.5, n)).astype(np.int64)
    )
    rec = empty_requests(n)
    rec["req_ns"], rec["latency_us"], rec["resp_ns"] = req, latency, req + latency * 1000
    mapped = np.uint64(IPV4_MAPPED_LO)
    rec["client_lo"] = mapped | (np.uint64(0x0A000001) + svc.astype(np.uint64))  # 10.0.x.y
    rec["server_lo"] = mapped | (np.uint64(0x0A090001) + (svc // 4).astype(np.uint64))  # 10.9.x.y
    rec["client_port"] = rng.integers(32768, 61000, n)
    rec["server_port"], rec["l7_proto"], rec["proto"] = 3306, L7_MYSQL, 6
    failed = rng.random(n) < 0.01
    rec["status"] = np.where(failed, REQ_SERVER_ERROR, REQ_OK)
    rec["code"] = np.where(failed, 1205, 0)
    which = rng.integers(0, 8, n)
    rec["request_type"] = np.array([b"SELECT"] * 6 + [b"UPDATE", b"INSERT"], "S16")[which]
    rec["resource"] = np.array([f"SELECT * FROM t{i} WHERE id = ?".encode() for i in range(6)]
                               + [b"UPDATE t0 SET n = ? WHERE id = ?", b"INSERT INTO log VALUES (?)"], "S160")[which]  # fmt: skip
    t = requests_to_arrow(rec)
    zeros = np.zeros(n, np.int32)
    for name, value in (("agent_id", "bench"), ("interface_name", "tap0"), ("vm_domain", ""), ("vm_mac", "")):
        t = t.append_column(name, _strings([value], zeros))
    for side, ids in (("client", svc + 1), ("server", 10_000 + svc // 4)):
        t = t.append_column(f"{side}_vm_id", pa.array(ids.astype(np.uint32)))
        t = t.append_column(f"{side}_project_id", pa.array(np.ones(n, np.uint32)))
    return t


def timed(fn, repeat: int) -> tuple[float, float, object]:  # noqa: ANN001
    """(median wall s, median CPU s, last answer)."""
    times, cpus, out = [], [], None
    for _ in range(repeat):
        c, t = time.process_time(), time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return statistics.median(times), statistics.median(cpus), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--services", type=int, default=100)
    ap.add_argument("--hours", type=int, default=2)
    ap.add_argument("--rate", type=float, default=2.0, help="requests per second per service")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--data", type=Path, default=Path("/tmp/bench-requests"))
    ap.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parents[1] / "results" / "analysis_request_metrics.json",
    )
    args = ap.parse_args()

    from cloudtap.server.analyse import (
        CompareRequest,
        DrillRequest,
        Signature,
        TopologyRequest,
        backtest,
        compare,
        drill,
        topology,
    )  # fmt: skip
    from cloudtap.server.query.timespec import iso
    from cloudtap.server.store.base import BatchKey
    from cloudtap.server.store.clickhouse import ClickHouseStore

    shutil.rmtree(args.data, ignore_errors=True)
    store = ClickHouseStore(f"chdb://{args.data}", database="bench")
    store.migrate()
    rng = np.random.default_rng(7)
    t = time.perf_counter()
    for hour in range(args.hours):
        store.insert(
            {"requests": hour_table(hour, args.hours, args.services, args.rate, rng)},
            BatchKey("bench", hour + 1),
        )
    load_s = time.perf_counter() - t
    rows = store.query_arrow("SELECT count() AS n FROM bench.request_log").to_pylist()[0]["n"]
    end = START_S + args.hours * 3600
    last_hour = {"time_from": iso((end - 3600) * NS), "time_to": iso(end * NS)}
    half = {"time_from": iso((end - 1800) * NS), "time_to": iso(end * NS)}
    sig = Signature.model_validate(
        {"filter": {"client_ip": "10.0.0.1"}, "condition": {"metric": "latency_p99", "threshold": 5}}
    )
    raw_where = f"req >= toDateTime64({end - 3600}, 9, 'UTC') AND req < toDateTime64({end}, 9, 'UTC')"
    from cloudtap.server.store.ddl import ip_text_sql

    raw_topology = (
        f"SELECT {ip_text_sql('client_ip')} AS client, {ip_text_sql('server_ip')} AS server, server_port, l7_proto, count() AS requests, "
        "quantileExactIf(0.99)(latency_us, latency_us >= 0) AS p99 FROM bench.request_log "
        f"WHERE {raw_where} GROUP BY client_ip, server_ip, server_port, l7_proto ORDER BY p99 DESC LIMIT 500"
    )
    raw_backtest = (
        "SELECT toStartOfMinute(req) AS m, quantileExactIf(0.99)(latency_us, latency_us >= 0) AS p99 "
        "FROM bench.request_log WHERE client_ip = toIPv6('::ffff:10.0.0.1') GROUP BY m ORDER BY m"
    )
    cases = {
        "topology_p99_last_hour": (lambda: topology(store, TopologyRequest(**last_hour, level="ip", metric="latency_p99")),
                                   lambda: store.query_arrow(raw_topology)),
        "compare_p99_last_30m_vs_before": (lambda: compare(store, CompareRequest(**half, baseline="before", metric="latency_p99")), None),
        "drill_server_of_service_0": (lambda: drill(store, DrillRequest(**last_hour, target={"ip": "10.9.0.1"})), None),
        "backtest_p99_all_history": (lambda: backtest(store, sig), lambda: store.query_arrow(raw_backtest)),
    }  # fmt: skip
    results: dict[str, object] = {}
    for name, (fn, peer) in cases.items():
        secs, cpu, _ = timed(fn, args.repeat)
        entry: dict[str, object] = {"seconds": round(secs, 4), "cpu_seconds": round(cpu, 4)}
        if peer is not None:
            p_secs, p_cpu, _ = timed(peer, args.repeat)
            entry |= {"raw_log_seconds": round(p_secs, 4), "raw_log_cpu_seconds": round(p_cpu, 4),
                      "raw_log_over_rollup": round(p_secs / secs, 2) if secs else None}  # fmt: skip
        results[name] = entry
        print(name, entry, flush=True)
    topo = topology(store, TopologyRequest(**last_hour, level="ip", metric="latency_p99", limit=5000))
    exact = {(r["client"], r["server"]): r["p99"] / 1000.0 for r in store.query_arrow(
        raw_topology.replace("quantileExactIf(0.99)", "quantileExactInclusiveIf(0.99)").replace("LIMIT 500", "")).to_pylist()}  # fmt: skip
    rel = np.array([abs(e.requests.latency_p99_ms - exact[(e.source, e.target)]) / exact[(e.source, e.target)]  # type: ignore[union-attr,operator]
                    for e in topo.edges if (e.source, e.target) in exact])  # fmt: skip
    store.close()
    run = {
        "services": args.services, "hours": args.hours, "rate_per_s": args.rate, "rows": rows, "load_seconds": round(load_s, 2),
        "cases": results,
        "p99_tdigest_vs_exact": {"services": int(len(rel)), "median_rel_error": round(float(np.median(rel)), 5),
                                 "max_rel_error": round(float(rel.max()), 5)},
    }  # fmt: skip
    report = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "repeat": args.repeat, "runs": {}}
    if args.out.exists():
        report = json.loads(args.out.read_text())
    report["runs"][f"{args.services}x{args.hours}h@{args.rate:g}/s"] = run  # type: ignore[index]
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(run, indent=2))


if __name__ == "__main__":
    main()

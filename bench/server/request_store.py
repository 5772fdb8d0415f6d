"""Application requests in the store: insert rate with and without the three rollup views, and per-server
p99 latency from the rollups' t-digest against an exact quantile over ``request_log`` and numpy over the
same rows (the peer), in the same run.

Rows are planted ``L7_DTYPE`` records (the agent's exact Arrow schema via ``requests_to_arrow``): ``--clients``
(2,000), ``--servers`` (100, Zipf-like), 4 ports, lognormal latencies, every outcome, over ``--hours`` of
request time. The rollups' size, and so the views' cost and the rollup query's speed, follow the number of
distinct (client, server, port) per bucket: sparse traffic makes each rollup nearly as long as the log. They go in through ``ClickHouseStore.insert`` in batches, as the API does.

Usage: ``python bench/server/request_store.py [--rows 2000000] [--batch 200000] [--hours 24] [--clients 2000]
[--servers 100]``
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time

import numpy as np
import pyarrow as pa

from cloudtap.l7.records import requests_to_arrow
from cloudtap.schema.request import empty_requests
from cloudtap.server.store.base import BatchKey
from cloudtap.server.store.clickhouse import ClickHouseStore

START_NS = 1_767_607_200 * 10**9
V4 = 0xFFFF_0000_0000


def planted(n: int, hours: float, clients: int = 2000, servers: int = 100, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    r = empty_requests(n)
    r["req_ns"] = START_NS + np.sort(rng.integers(0, int(hours * 3600e9), n))
    status = rng.choice(5, n, p=[0.9, 0.04, 0.02, 0.02, 0.02]).astype(np.uint8)
    lat = np.maximum(1, rng.lognormal(np.log(3000), 0.8, n)).astype(np.int64)
    r["latency_us"] = np.where(status <= 2, lat, -1)
    r["resp_ns"] = np.where(status <= 2, r["req_ns"] + lat * 1000, 0)
    r["status"] = status
    r["code"] = np.where(status == 0, 200, np.where(status == 1, 404, 503))
    r["client_lo"] = V4 | (10 << 24) | (1 << 16) | rng.integers(0, clients, n)
    zipf = 1.0 / np.arange(1, servers + 1)
    r["server_lo"] = V4 | (10 << 24) | (2 << 16) | rng.choice(servers, n, p=zipf / zipf.sum())
    r["server_port"] = rng.choice(np.array([80, 443, 5432, 6379], np.uint16), n)
    r["client_port"] = rng.integers(30000, 60000, n)
    r["l7_proto"], r["proto"] = 1, 6
    r["request_type"] = b"GET"
    paths = np.array([f"/api/v1/item/{i}".encode() for i in range(500)], "S160")
    r["resource"] = paths[rng.integers(0, 500, n)]
    return r


def _octet(ip: str) -> int:
    """Last octet of a planted server address (``::ffff:10.2.0.7`` -> 7)."""
    return int(ip.rsplit(".", 1)[-1])


def _cpu() -> float:
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def insert_all(store: ClickHouseStore, table: pa.Table, batch: int) -> tuple[float, float]:
    """(wall s, CPU s) of inserting ``table`` in ``batch``-row batches."""
    t, c = time.perf_counter(), _cpu()
    for i, start in enumerate(range(0, table.num_rows, batch)):
        part = table.slice(start, batch).append_column(
            "agent_id", pa.array(["hv-1"] * min(batch, table.num_rows - start), pa.string())
        )
        store.insert({"requests": part}, BatchKey("bench", i))
    return time.perf_counter() - t, _cpu() - c


def timed(fn, repeat: int = 3) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--batch", type=int, default=200_000)
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--clients", type=int, default=2000, help="distinct client IPs (at most 65,536)")
    ap.add_argument("--servers", type=int, default=100, help="distinct server IPs (at most 255)")
    args = ap.parse_args()
    records = planted(args.rows, args.hours, args.clients, args.servers)
    table = requests_to_arrow(records)
    work = tempfile.mkdtemp(prefix="cloudtap-reqbench-")
    try:
        store = ClickHouseStore(f"chdb://{work}/chdb", database="with_views")
        store.migrate()
        wall_v, cpu_v = insert_all(store, table, args.batch)
        bare = ClickHouseStore(f"chdb://{work}/chdb", database="no_views")
        bare.migrate()
        for view in ("request_1s_mv", "request_1m_mv", "request_1h_mv"):
            bare.command(f"DROP VIEW no_views.{view}")
        wall_b, cpu_b = insert_all(bare, table, args.batch)
        n = args.rows
        sizes = {t: store.query_arrow(f"SELECT count() AS n FROM with_views.{t}")["n"][0].as_py()
                 for t in ("request_1s", "request_1m", "request_1h")}  # fmt: skip
        print("rollup rows per request: " + ", ".join(f"{t} {v / n:.3f}" for t, v in sizes.items()))
        print(f"insert {n:,} requests, 3 rollup views: {n / wall_v / 1e6:.2f} M rows/s wall, "
              f"{n / cpu_v / 1e6:.2f} M rows per CPU-second")  # fmt: skip
        print(f"insert without the views:           {n / wall_b / 1e6:.2f} M rows/s wall, "
              f"{n / cpu_b / 1e6:.2f} M rows per CPU-second (views cost {1 - cpu_b / cpu_v:.0%} of the CPU)")  # fmt: skip

        rollup_sql = (
            "SELECT IPv6NumToString(server_ip) AS s, sum(requests) AS n, "
            "quantilesTDigestMerge(0.5, 0.9, 0.99)(latency_digest)[3] / 1000 AS p99 "
            "FROM with_views.request_1h GROUP BY s ORDER BY p99 DESC LIMIT 10"
        )
        exact_sql = (
            "SELECT IPv6NumToString(server_ip) AS s, count() AS n, "
            "quantileExactIf(0.99)(latency_us, latency_us >= 0) / 1000 AS p99 "
            "FROM with_views.request_log GROUP BY s ORDER BY p99 DESC LIMIT 10"
        )
        t_rollup, fast = timed(lambda: store.query_arrow(rollup_sql).to_pylist())
        t_exact, exact = timed(lambda: store.query_arrow(exact_sql).to_pylist())

        def numpy_p99() -> dict[int, float]:
            ok = records["latency_us"] >= 0
            srv, lat = records["server_lo"][ok], records["latency_us"][ok]
            order = np.argsort(srv, kind="stable")
            srv, lat = srv[order], lat[order]
            cuts = np.flatnonzero(np.diff(srv)) + 1
            return {int(g[0]) & 0xFF: float(np.percentile(v, 99)) / 1000
                    for g, v in zip(np.split(srv, cuts), np.split(lat, cuts), strict=True)}  # fmt: skip

        t_numpy, ref = timed(numpy_p99)
        worst = max(abs(r["p99"] - ref[_octet(r["s"])]) / ref[_octet(r["s"])] for r in fast)  # type: ignore[index,union-attr]
        print(f"top-10 servers by p99 over {args.hours:g} h: rollup (request_1h digest) {t_rollup * 1000:.1f} ms, "
              f"exact quantile over request_log {t_exact * 1000:.1f} ms ({t_exact / t_rollup:.1f}x), "
              f"numpy over the rows in memory {t_numpy * 1000:.1f} ms ({t_numpy / t_rollup:.1f}x)")  # fmt: skip
        same = [r["s"] for r in fast] == [r["s"] for r in exact]  # type: ignore[union-attr]
        print(
            f"digest p99 vs numpy: largest relative difference {worst:.2%}; same top-10 order as exact: {same}"
        )
        store.close()
        bare.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""One findings cycle over 10k edges: its time against the stored days, and against a full recompute.

Rows are synthesised straight into ``edge_1m`` (``INSERT ... SELECT`` from ``numbers()`` inside ClickHouse,
so the views fill ``edge_1h`` / ``endpoint_*`` as in production): E edges (default 10,000), each active
every minute with a diurnal level plus noise, one day at a time. After 1, 3 and 7 stored days, the bench
times (median of ``--repeat``, wall clock and this process's CPU time, store warm) one cycle of the engine
on the newest minute:

* **incremental** (what the server runs): ``FindingsEngine.run_minute``: every detector on the minute, the
  new-edge check against the learned baseline ``finding_seen_edge`` (one row per distinct edge, kept up to
  date by each cycle; primed here as if the engine had run all along), the fixed look-backs (1 h of
  ``edge_1m`` for bursts, 10 min for load balancing, 24 h backtests for pushes), folding and storing.
* **full recompute** (the peer: the same cycle without the incremental baseline): identical, except the
  known edges come from a scan of all of ``edge_1m`` before the minute (``SELECT DISTINCT`` edge key),
  which is what the engine would do without its seen-edges table.

The ratio printed is recompute / incremental; both answer the same findings. Results go to
``bench/results/findings_cycle.json``.

    python bench/findings/run.py --edges 10000 --days 1 3 7 --data /tmp/bench-findings
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
from typing import Any

DAY_S = 86400
START_S = 1_767_225_600  # 2026-01-01T00:00:00Z


def insert_day_sql(db: str, day: int, edges: int) -> str:
    """One day of 1-min rows for every edge, generated inside ClickHouse."""
    t0 = START_S + day * DAY_S
    return (
        f"INSERT INTO `{db}`.edge_1m (time, client_ip, server_ip, server_port, proto, vlan, tunnel_id, interface, "
        "packets_c2s, packets_s2c, bytes_c2s, bytes_s2c, retrans, flows_opened, flows_closed, flows_failed, "
        "rtt_sum_us, rtt_count, agent_id, client_project_id, server_project_id) "
        "SELECT toDateTime(t, 'UTC'), toIPv6(IPv4NumToString(toUInt32(167837696 + e))), "
        "toIPv6(IPv4NumToString(toUInt32(168427520 + e % 2500))), toUInt16(80 + e % 5), 6, 0, 0, 0, "
        "toUInt64(b / 1200 + 1), toUInt64(b / 2400 + 1), toUInt64(b), toUInt64(b / 2), "
        "toUInt64(cityHash64(e, t) % 100 = 0), toUInt64(1 + cityHash64(t, e) % 5), toUInt64(1 + cityHash64(t, e) % 5), "
        "toUInt64(cityHash64(e, t, 1) % 200 = 0), 300.0, 1, 'bench', toUInt32(1 + e % 20), toUInt32(1 + e % 2500 % 20) "
        f"FROM (SELECT number % {edges} AS e, {t0} + intDiv(number, {edges}) * 60 AS t, "
        f"2e5 * (1.3 + sin(2 * pi() * (t % 86400) / 86400)) * (1 + e % 50) * (0.5 + (cityHash64(e, t) % 1000) / 1000) AS b "
        f"FROM numbers({edges * 1440}))"
    )


def timed(fn: Any, repeat: int) -> tuple[float, float, Any]:
    """(median wall s, median CPU s of this process: chDB's threads included), last result."""
    walls, cpus, out = [], [], None
    for _ in range(repeat):
        c, t = time.process_time(), time.perf_counter()
        out = fn()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus), out


def recompute_new(cycle: Any) -> list[Any]:
    """``new_edge`` / ``new_port`` with the known edges scanned from all of ``edge_1m`` (no baseline table)."""
    import numpy as np

    from cloudtap.server.findings import detect_new
    from cloudtap.server.findings.edges import KEY_SQL, PAIR_SQL

    table = cycle.store.query_arrow(
        f"SELECT {KEY_SQL} AS key, any({PAIR_SQL}) AS pair FROM `{cycle.store.database}`.edge_1m "
        "WHERE time < toDateTime({t0:Int64}, 'UTC') GROUP BY key",
        {"t0": cycle.t0},
    )
    keys, pairs = table["key"].to_numpy(), table["pair"].to_numpy()
    original = detect_new.seen_keys
    detect_new.seen_keys = lambda c: (keys, np.unique(pairs))  # type: ignore[assignment]
    try:
        return detect_new.detect_new(cycle)
    finally:
        detect_new.seen_keys = original  # type: ignore[assignment]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--edges", type=int, default=10_000)
    ap.add_argument("--days", type=int, nargs="+", default=[1, 3, 7])
    ap.add_argument("--data", type=Path, default=Path("/tmp/bench-findings"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--reuse", action="store_true", help="keep the days already stored in --data (re-time only)"
    )
    ap.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parents[1] / "results" / "findings_cycle.json"
    )
    args = ap.parse_args()

    from cloudtap.server.findings import engine as engine_module
    from cloudtap.server.findings.config import FindingsSection
    from cloudtap.server.findings.engine import FindingsEngine
    from cloudtap.server.store.clickhouse import ClickHouseStore

    if args.data.exists() and not args.reuse:
        shutil.rmtree(args.data)
    store = ClickHouseStore(f"chdb://{args.data}", database="bench")
    store.migrate()
    db = store.database
    last = int(store.command(f"SELECT toUnixTimestamp(max(time)) FROM `{db}`.edge_1m") or 0)
    config = FindingsSection(learn_minutes=0, max_catchup_minutes=1)
    engine = FindingsEngine(store, config)
    engine.findings.ensure()
    incremental = dict(engine_module.DETECTORS)
    recompute = {**incremental, "new": recompute_new}
    results = []
    stored = max(0, (last - START_S) // DAY_S + 1) if last > START_S else 0
    for days in sorted(args.days):
        t = time.perf_counter()
        while stored < days:
            store.command(insert_day_sql(db, stored, args.edges))
            stored += 1
        load_s = time.perf_counter() - t
        rows = int(store.command(f"SELECT count() FROM `{db}`.edge_1m"))
        t_last = START_S + days * DAY_S - 60
        # the baseline as the running engine would have it: every edge seen before the newest minute
        store.command(
            f"INSERT INTO `{db}`.finding_seen_edge SELECT client_ip, server_ip, server_port, proto, min(time), max(time), "
            f"max(client_project_id), max(server_project_id), now() FROM `{db}`.edge_1m "
            f"WHERE time >= toDateTime({START_S + (days - 1) * DAY_S if days > 1 else START_S}, 'UTC') "
            f"AND time < toDateTime({t_last}, 'UTC') GROUP BY client_ip, server_ip, server_port, proto"
        )
        store.command(f"OPTIMIZE TABLE `{db}`.finding_seen_edge FINAL")
        engine.findings.set_cursor(t_last - 60, START_S)
        engine.run_minute(t_last)  # warm
        engine_module.DETECTORS.clear()
        engine_module.DETECTORS.update(incremental)
        inc_wall, inc_cpu, _ = timed(lambda t=t_last: engine.run_minute(t), args.repeat)
        engine_module.DETECTORS.clear()
        engine_module.DETECTORS.update(recompute)
        full_wall, full_cpu, _ = timed(lambda t=t_last: engine.run_minute(t), args.repeat)
        engine_module.DETECTORS.clear()
        engine_module.DETECTORS.update(incremental)
        edges_in_minute = len(engine_module.Cycle(store, config, t_last, t_last + 60).edges)
        entry = {"days": days, "edges": args.edges, "edges_in_minute": edges_in_minute, "edge_1m_rows": rows,
                 "load_s": round(load_s, 1), "incremental_wall_s": round(inc_wall, 3),
                 "incremental_cpu_s": round(inc_cpu, 3), "recompute_wall_s": round(full_wall, 3),
                 "recompute_cpu_s": round(full_cpu, 3), "ratio_wall": round(full_wall / inc_wall, 2),
                 "ratio_cpu": round(full_cpu / max(inc_cpu, 1e-9), 2)}  # fmt: skip
        results.append(entry)
        print(f"{days} d ({rows:,} rows, {edges_in_minute:,} edges in the minute): incremental cycle "
              f"{inc_wall:.3f} s (CPU {inc_cpu:.3f}), full recompute {full_wall:.3f} s (CPU {full_cpu:.3f}): "
              f"recompute / incremental = {full_wall / inc_wall:.2f}x", flush=True)  # fmt: skip
    store.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.reuse and args.out.exists():  # re-timed days replace their entries
        kept = [
            r
            for r in json.loads(args.out.read_text())["runs"]
            if r["days"] not in {e["days"] for e in results}
        ]
        results = sorted(kept + results, key=lambda r: r["days"])
    args.out.write_text(json.dumps({
        "bench": "findings cycle: incremental vs full recompute", "host": platform.node(), "cpus": os.cpu_count(),
        "load": os.getloadavg(), "repeat": args.repeat, "runs": results,
    }, indent=2) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()

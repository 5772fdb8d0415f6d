"""Fleet benchmark: N simulated agents under one ``cloudtap server run`` on loopback.

The agents run in ``--procs`` worker processes (``bench/fleet/agents.py``, asyncio + httpx; one Python process
cannot offer region-scale load). Each registers with the controller (shared token), heartbeats every
``--heartbeat`` s (10 s in production), keeps a command long-poll open, and ships a batch every
``--ship-every`` s (agents flush every 1 s by default): ``--rows`` rows of each kind of real metered records
(``cloudtap synth small-cloud`` metered by ``import_tables``: flows and 1 s edges), with its own agent id and
sequence, waiting for each acknowledgement like the agent's sink (429 ``Retry-After`` honoured). One controller
command (stop) is sent to 20 agents mid-run to time long-poll delivery under load.

Reported: server CPU (psutil on the server pid: cores used, CPU-s per million rows), heartbeat latency p50/p99
(as the agents see it, and as a separate probe process heartbeating 4 times a second sees it), ingest rows/s,
command delivery p50/max, and that nothing was lost: rows acknowledged == rows stored (counted in the
chDB data after the server stopped). Results: ``bench/results/fleet.json``.

Also reported: the coalesced inserts (``merged_inserts``: server inserts that held several batches,
``merged_blocks``: their per-table blocks; see docs/shipping.md).

Usage: ``python bench/fleet/run.py [--agents 500] [--duration 120] [--heartbeat 2] [--ship-every 10]
[--rows 200] [--procs 2] [--coalesce-ms 50]``
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
from agents import TOKEN, Stats, records  # bench/fleet/agents.py (the script's folder is on sys.path)

REPO = Path(__file__).resolve().parents[2]
ADMIN_PASSWORD = "bench admin password"


async def admin(url: str, token: str, args: argparse.Namespace, stop_at: float, cmd_sent: dict[str, float],
                samples: list[dict[str, Any]]) -> None:  # fmt: skip
    """Send a stop command to 20 agents mid-run (wall time kept in ``cmd_sent``), poll the fleet views."""
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, timeout=60, headers=headers) as client:
        await asyncio.sleep(min(args.duration / 2, 30))
        ids = {a["name"]: a["id"] for a in (await client.get("/api/v1/agents")).json()}
        for i in range(0, min(args.agents, 20)):
            name = f"sim-{i:04d}"
            if name not in ids:
                continue
            cmd_sent[name] = time.time()
            try:
                await client.post(f"/api/v1/agents/{ids[name]}/capture/stop")
            except httpx.HTTPError:
                cmd_sent.pop(name, None)
        while time.monotonic() < stop_at:
            t = time.perf_counter()
            try:
                top = (await client.get("/api/v1/fleet/top", params={"by": "bps", "window": "1m", "limit": 5})).json()
                stale = (await client.get("/api/v1/fleet/stale")).json()
            except httpx.HTTPError:
                top, stale = [], []
            samples.append({"fleet_top_ms": (time.perf_counter() - t) * 1000, "top": [r["name"] for r in top],
                            "stale": len(stale)})  # fmt: skip
            await asyncio.sleep(max(0.0, min(10.0, stop_at - time.monotonic())))


def start_workers(url: str, args: argparse.Namespace, scratch: Path) -> list[subprocess.Popen[str]]:
    """The agent worker processes (agents dealt round robin), each back once its batches are encoded."""
    names = [f"sim-{i:04d}" for i in range(args.agents)]
    procs = []
    for k in range(args.procs):
        cfg = {"url": url, "names": names[k :: args.procs], "rows": args.rows, "duration": args.duration,
               "heartbeat": args.heartbeat, "ship_every": args.ship_every, "commands": args.commands,
               "work": str(scratch)}  # fmt: skip
        nice = ["nice", "-n", str(args.nice)] if args.nice else []  # agents run on other hosts in production
        procs.append(subprocess.Popen([*nice, sys.executable, str(Path(__file__).with_name("agents.py")), json.dumps(cfg)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))  # fmt: skip
    for p in procs:
        if (p.stdout.readline() if p.stdout else "").strip() != "ready":
            raise SystemExit("an agent worker failed to start")
    return procs


PROBE = """
import json, sys, time, httpx
url, token, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
with httpx.Client(base_url=url, timeout=30) as c:
    reg = c.post("/api/v1/agents/register", json={"name": "probe", "hostname": "probe-host", "machine_id": "probe"},
                 headers={"Authorization": "Bearer " + token}).json()
    head = {"Authorization": "Bearer " + reg["credential"]}
    ms, errors, stop = [], 0, time.monotonic() + seconds
    while time.monotonic() < stop:
        t = time.perf_counter()
        try:
            c.post("/api/v1/agents/" + reg["agent_id"] + "/heartbeat", json={"capturing": True}, headers=head).raise_for_status()
            ms.append((time.perf_counter() - t) * 1000)
        except httpx.HTTPError:
            errors += 1
        time.sleep(0.25)
print(json.dumps({"ms": ms, "errors": errors}))
"""


def probe(url: str, seconds: float) -> subprocess.Popen[str]:
    """A separate process heartbeating as one more agent, 4 times a second: the latency a real agent sees under
    the load (the simulator's own figures include its event loop, busy with 500 agents in one process)."""
    return subprocess.Popen([sys.executable, "-c", PROBE, url, TOKEN, str(seconds)], stdout=subprocess.PIPE, text=True)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def stored_rows(data: Path) -> dict[str, int]:
    from cloudtap.server.store.clickhouse import ClickHouseStore

    store = ClickHouseStore(f"chdb://{data}")
    try:
        out = {}
        for kind, table in (("flows", "flow_log"), ("edges_1s", "edge_1s")):
            t = store.query_arrow(f"SELECT count() AS n FROM cloudtap.{table}")  # only the simulated agents ship
            out[kind] = int(t.column("n")[0].as_py())
        # coalesced inserts: each merged block logs a "~group:<digest>" row (see docs/shipping.md)
        t = store.query_arrow("SELECT uniqExact(agent_id) AS g, count() AS b FROM cloudtap.ingest_log "
                              "WHERE startsWith(agent_id, '~group:')")  # fmt: skip
        out["merged_inserts"] = int(t.column("g")[0].as_py())
        out["merged_blocks"] = int(t.column("b")[0].as_py())
        return out
    finally:
        store.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agents", type=int, default=500)
    ap.add_argument("--duration", type=float, default=120.0)
    ap.add_argument("--heartbeat", type=float, default=2.0, help="heartbeat period (10 s in production)")
    ap.add_argument("--ship-every", type=float, default=10.0, help="seconds between one agent's batches (0: no shipping)")
    ap.add_argument("--rows", type=int, default=200, help="rows per kind per batch")
    ap.add_argument("--coalesce-ms", type=float, default=None, help="server ingest.coalesce_ms (default: the server's)")
    ap.add_argument("--no-commands", dest="commands", action="store_false", help="no command long-polls")
    ap.add_argument("--procs", type=int, default=2, help="agent worker processes (agents dealt round robin)")
    ap.add_argument("--nice", type=int, default=0,
                    help="niceness of the agent workers (agents run on other hosts in production: 10 gives the "
                         "server and the probe the CPU first on a small machine)")  # fmt: skip
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "fleet.json")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="cloudtap-fleet-"))
    work.mkdir(parents=True, exist_ok=True)
    scratch = REPO / "bench" / "results" / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)  # a fresh clone has no such folder
    records(scratch)  # the metered capture, made once here for every worker
    data = work / "data"
    if data.exists():  # rows of an earlier run in a reused --work would count as stored by this one
        shutil.rmtree(data)
    status = work / "url"
    status.unlink(missing_ok=True)
    env = {**os.environ, "CLOUDTAP_SERVER__API__STATUS_FILE": str(status), "CLOUDTAP_SERVER__CONTROLLER__TOKEN": TOKEN,
           "CLOUDTAP_SERVER__CONTROLLER__HEARTBEAT_S": str(args.heartbeat)}  # fmt: skip
    if args.coalesce_ms is not None:
        env["CLOUDTAP_SERVER__INGEST__COALESCE_MS"] = str(args.coalesce_ms)
    log = open(work / "server.log", "w", encoding="utf-8")  # noqa: SIM115 - lives as long as the server
    (work / "admin-password").write_text(ADMIN_PASSWORD)
    server = subprocess.Popen([sys.executable, "-m", "cloudtap.cli.main", "server", "run", "--data", str(data),
                               "--port", "0", "--admin-password-file", str(work / "admin-password")],
                              env=env, stderr=log, stdout=log, text=True)  # fmt: skip
    deadline = time.monotonic() + 90
    while not (status.exists() and status.read_text().strip()):
        if time.monotonic() > deadline or server.poll() is not None:
            raise SystemExit(f"server did not start: {(work / 'server.log').read_text()}")
        time.sleep(0.1)
    url = status.read_text().strip()
    token = httpx.post(url + "/api/v1/auth/token", json={"username": "admin", "password": ADMIN_PASSWORD,
                                                          "name": "bench"}, timeout=60).json()["token"]  # fmt: skip
    proc = psutil.Process(server.pid)
    workers = start_workers(url, args, scratch)
    stats = Stats()
    cmd_sent: dict[str, float] = {}
    samples: list[dict[str, Any]] = []
    cpu0 = proc.cpu_times()
    load0 = round(os.getloadavg()[0], 2)  # other work on the machine skews every figure
    me0 = psutil.Process().cpu_times()
    t0 = time.monotonic()
    stop_at = t0 + args.duration

    for w in workers:
        w.stdin.write("go\n") if w.stdin else None
        w.stdin.flush() if w.stdin else None
    prober = probe(url, max(5.0, args.duration - 15))
    asyncio.run(admin(url, token, args, stop_at, cmd_sent, samples))
    for w in workers:
        out, _ = w.communicate(timeout=args.duration + 120)
        stats.merge(json.loads(out.strip().splitlines()[-1]))
    elapsed = time.monotonic() - t0
    cmd_ms = [(stats.commands_at[n] - sent) * 1000 for n, sent in cmd_sent.items() if n in stats.commands_at]
    probed = json.loads(prober.communicate(timeout=120)[0] or '{"ms": [], "errors": 0}')
    cpu1 = proc.cpu_times()
    me1 = psutil.Process().cpu_times()
    rss = proc.memory_info().rss
    server_cpu_s = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
    with httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {token}"}) as c:
        agents_seen = len(c.get("/api/v1/agents").json())
    server.send_signal(signal.SIGTERM)
    server.wait(60)
    stored = stored_rows(data)
    merged = {"merged_inserts": stored.pop("merged_inserts"), "merged_blocks": stored.pop("merged_blocks")}
    sent_total = sum(stats.rows_sent.values())
    result = {
        "date": time.strftime("%Y-%m-%d"), "agents": args.agents, "duration_s": round(elapsed, 1),
        "heartbeat_s": args.heartbeat, "ship_every_s": args.ship_every, "rows_per_kind_per_batch": args.rows,
        "registered": stats.registered, "register_errors": stats.register_errors[:3], "agents_in_registry": agents_seen,
        "heartbeats": len(stats.hb_ms), "heartbeat_errors": stats.hb_errors,
        "heartbeat_ms_p50": round(pct(stats.hb_ms, 0.5), 2), "heartbeat_ms_p99": round(pct(stats.hb_ms, 0.99), 2),
        "heartbeat_ms_max": round(max(stats.hb_ms, default=0), 2),
        "probe_heartbeats": len(probed["ms"]), "probe_heartbeat_errors": probed["errors"],
        "probe_heartbeat_ms_p50": round(pct(probed["ms"], 0.5), 2), "probe_heartbeat_ms_p99": round(pct(probed["ms"], 0.99), 2),
        "probe_heartbeat_ms_max": round(max(probed["ms"], default=0), 2),
        "batches": stats.batches, "ship_errors": len(stats.ship_errors),
        "ship_error_kinds": dict(collections.Counter(stats.ship_errors)), "last_refusal": stats.last_refusal, "ship_ms_p50": round(pct(stats.ship_ms, 0.5), 2),
        "ship_ms_p99": round(pct(stats.ship_ms, 0.99), 2),
        "coalesce_ms": args.coalesce_ms, **merged,
        "ingest_rows_per_s": round(sent_total / elapsed, 1), "rows_sent": stats.rows_sent, "rows_stored": stored,
        "lost_rows": {k: stats.rows_sent.get(k, 0) - stored.get(k, 0) for k in stats.rows_sent},
        "nothing_lost": all(stats.rows_sent.get(k, 0) == stored.get(k, 0) for k in stats.rows_sent),
        "server_cpu_cores": round(server_cpu_s / elapsed, 3), "server_rss_mib": rss >> 20,
        "server_cpu_ms_per_request": round(1000 * server_cpu_s / max(1, stats.batches + len(stats.hb_ms)), 2),
        "server_cpu_s_per_million_rows": round(1e6 * server_cpu_s / max(1, sent_total), 1),
        "bench_client_cpu_cores": round(((me1.user + me1.system) - (me0.user + me0.system) + stats.cpu_s) / elapsed, 3),
        "agent_worker_processes": args.procs, "agent_worker_nice": args.nice,
        "command_delivery_ms_p50": round(pct(cmd_ms, 0.5), 1), "command_delivery_ms_max": round(max(cmd_ms, default=0), 1),
        "commands_delivered": len(cmd_ms), "fleet_top_ms_max": round(max((s["fleet_top_ms"] for s in samples), default=0), 1),
        "server_log_lines": len((work / "server.log").read_text().splitlines()),
        "stale_max_during_run": max((s["stale"] for s in samples), default=0), "machine": {"cpus": os.cpu_count(), "loadavg_1m_start": load0, "loadavg_1m_end": round(os.getloadavg()[0], 2)},
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""Fleet benchmark: N simulated agents (asyncio + httpx) under one ``cloudtap server run`` on loopback.

Each simulated agent registers with the controller (shared token), heartbeats every ``--heartbeat`` s
(10 s in production, compressed), keeps a command long-poll open, and ships a batch every ``--ship-every``
s: real metered records (``cloudtap synth small-cloud`` metered by ``import_tables``: flows and 1 s edges),
``--rows`` rows of each kind (default every 10 s; agents flush every 1 s by default, ``--ship-every 1``), encoded by ``cloudtap.ship.wire`` with its own agent id and sequence. One
controller command (stop) is sent to 20 agents mid-run to time long-poll delivery under load.

Reported: server CPU (psutil on the server pid: cores used), heartbeat latency p50/p99 (as the simulator sees
it, and as a separate probe process heartbeating 4 times a second sees it: the simulator's own figures include
its event loop, busy with every agent in one process), ingest rows/s,
command delivery p50/max, and that nothing was lost: rows acknowledged == rows stored (counted in the
chDB data after the server stopped). Results: ``bench/results/fleet.json``.

Also reported: the coalesced inserts (``merged_inserts``: server inserts that held several batches,
``merged_blocks``: their per-table blocks; see docs/shipping.md).

Usage: ``python bench/fleet/run.py [--agents 500] [--duration 120] [--heartbeat 2] [--ship-every 10]
[--coalesce-ms 50]``
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
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
import pyarrow as pa

REPO = Path(__file__).resolve().parents[2]
TOKEN = "bench-token"  # the controller bootstrap token agents register with
ADMIN_PASSWORD = "bench admin password"


def records(work: Path) -> dict[str, pa.Table]:
    """Real metered records: a 2-minute synthetic cloud metered like an import."""
    from cloudtap.server.importer import import_tables
    from cloudtap.synth import builtin_scenario, write_pcap
    from cloudtap.synth.scenario import with_overrides

    pcap = work / "cloud.pcap"
    if not pcap.exists():
        write_pcap(with_overrides(builtin_scenario("small-cloud"), duration="2m"), pcap)
    tables = import_tables([pcap]).tables
    return {k: tables[k] for k in ("flows", "edges_1s") if k in tables}


def with_agent(table: pa.Table, start: int, rows: int, agent: str) -> pa.Table:
    n = table.num_rows
    idx = pa.array([(start + i) % n for i in range(rows)])
    part = table.take(idx)
    col = part.column_names.index("agent_id")
    return part.set_column(col, "agent_id", pa.array([agent] * rows, pa.string()))


class Stats:
    def __init__(self) -> None:
        self.hb_ms: list[float] = []
        self.hb_errors = 0
        self.registered = 0
        self.ids: dict[str, str] = {}  # agent name -> the id the controller gave it
        self.last_refusal = ""
        self.register_errors: list[str] = []
        self.rows_sent: dict[str, int] = {}
        self.batches = 0
        self.ship_errors: list[str] = []
        self.ship_ms: list[float] = []
        self.cmd_ms: list[float] = []


async def agent(i: int, url: str, args: argparse.Namespace, tables: dict[str, pa.Table], stats: Stats,
                stop_at: float, cmd_sent: dict[str, float]) -> None:  # fmt: skip
    from cloudtap.ship.wire import encode_batch

    name = f"sim-{i:04d}"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    limits = httpx.Limits(max_connections=3, max_keepalive_connections=3)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60, limits=limits) as client:
        await asyncio.sleep(random.uniform(0, args.heartbeat))  # agents do not start in lockstep
        body = {"name": name, "hostname": f"hv-{i:04d}", "machine_id": f"m{i:08x}", "group": "bench",
                "mode": "interfaces", "heartbeat_s": args.heartbeat}  # fmt: skip
        r = await client.post("/api/v1/agents/register", json=body)
        if r.status_code != 200:
            stats.register_errors.append(r.text)
            return
        aid = r.json()["agent_id"]
        client.headers["Authorization"] = f"Bearer {r.json()['credential']}"  # the agent's own from now on
        stats.registered += 1
        stats.ids[name] = aid

        async def heartbeats() -> None:
            captured = 0
            while time.monotonic() < stop_at:
                captured += random.randint(10_000_000, 50_000_000)
                report = {"version": "bench", "mode": "interfaces", "capturing": True, "cpu_percent": random.uniform(1, 40),
                          "rss_bytes": random.randint(200, 400) << 20, "load1": random.uniform(0, 8), "cores": 32,
                          "captured_packets": captured // 800, "captured_bytes": captured,
                          "interfaces": [{"name": f"tap{i:04d}{k}", "mac": f"fa:16:3e:{i >> 8:02x}:{i & 255:02x}:{k:02x}",
                                          "domain": f"instance-{i:04d}{k}"} for k in range(4)]}  # fmt: skip
                t = time.perf_counter()
                try:
                    resp = await client.post(f"/api/v1/agents/{aid}/heartbeat", json=report)
                    if resp.status_code == 200:
                        stats.hb_ms.append((time.perf_counter() - t) * 1000)
                    else:
                        stats.hb_errors += 1
                except httpx.HTTPError:
                    stats.hb_errors += 1
                await asyncio.sleep(args.heartbeat)

        async def ship() -> None:
            seq = 0
            await asyncio.sleep(random.uniform(0, args.ship_every))
            while time.monotonic() < stop_at:
                seq += 1
                parts = {k: with_agent(t, random.randrange(t.num_rows), args.rows, name) for k, t in tables.items()}
                data = await asyncio.to_thread(encode_batch, name, seq, parts)
                t = time.perf_counter()
                for attempt in range(5):  # the agent's sink retries until acknowledged
                    try:
                        resp = await client.post("/api/v1/ingest", content=data, headers={
                            "Content-Type": "application/vnd.cloudtap.batch", "X-Cloudtap-Agent": name,
                            "X-Cloudtap-Seq": str(seq)})  # fmt: skip
                    except httpx.HTTPError as exc:
                        stats.ship_errors.append(f"{type(exc).__name__}")
                        await asyncio.sleep(0.5 * (attempt + 1))
                        continue
                    if resp.status_code == 200:
                        stats.ship_ms.append((time.perf_counter() - t) * 1000)
                        stats.batches += 1
                        for k, p in parts.items():
                            stats.rows_sent[k] = stats.rows_sent.get(k, 0) + p.num_rows
                        break
                    stats.ship_errors.append(f"HTTP {resp.status_code}")
                    stats.last_refusal = resp.text[:200]
                    await asyncio.sleep(0.5)
                await asyncio.sleep(args.ship_every)

        async def commands() -> None:
            while time.monotonic() < stop_at:
                try:
                    wait = max(0.0, min(25.0, stop_at - time.monotonic()))
                    resp = await client.get(f"/api/v1/agents/{aid}/commands", params={"wait": wait})
                except httpx.HTTPError:
                    await asyncio.sleep(1)
                    continue
                for _ in resp.json().get("commands", []):
                    if name in cmd_sent:
                        stats.cmd_ms.append((time.monotonic() - cmd_sent[name]) * 1000)

        tasks = [heartbeats()] + ([ship()] if args.ship_every > 0 else []) + ([commands()] if args.commands else [])
        await asyncio.gather(*tasks)


async def admin(url: str, token: str, args: argparse.Namespace, stop_at: float, cmd_sent: dict[str, float],
                samples: list[dict[str, Any]], stats: Stats) -> None:  # fmt: skip
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, timeout=60, headers=headers) as client:
        await asyncio.sleep(min(args.duration / 2, 30))
        for i in range(0, min(args.agents, 20)):
            name = f"sim-{i:04d}"
            if name not in stats.ids:
                continue
            cmd_sent[name] = time.monotonic()
            try:
                await client.post(f"/api/v1/agents/{stats.ids[name]}/capture/stop")
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
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "fleet.json")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="cloudtap-fleet-"))
    work.mkdir(parents=True, exist_ok=True)
    scratch = REPO / "bench" / "results" / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)  # a fresh clone has no such folder
    tables = records(scratch)
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
    stats = Stats()
    cmd_sent: dict[str, float] = {}
    samples: list[dict[str, Any]] = []
    cpu0 = proc.cpu_times()
    load0 = round(os.getloadavg()[0], 2)  # other work on the machine skews every figure
    me0 = psutil.Process().cpu_times()
    t0 = time.monotonic()
    stop_at = t0 + args.duration

    async def everything() -> None:
        await asyncio.gather(admin(url, token, args, stop_at, cmd_sent, samples, stats),
                             *(agent(i, url, args, tables, stats, stop_at, cmd_sent) for i in range(args.agents)))  # fmt: skip

    prober = probe(url, max(5.0, args.duration - 15))
    asyncio.run(everything())
    elapsed = time.monotonic() - t0
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
        "bench_client_cpu_cores": round(((me1.user + me1.system) - (me0.user + me0.system)) / elapsed, 3),
        "command_delivery_ms_p50": round(pct(stats.cmd_ms, 0.5), 1), "command_delivery_ms_max": round(max(stats.cmd_ms, default=0), 1),
        "commands_delivered": len(stats.cmd_ms), "fleet_top_ms_max": round(max((s["fleet_top_ms"] for s in samples), default=0), 1),
        "server_log_lines": len((work / "server.log").read_text().splitlines()),
        "stale_max_during_run": max((s["stale"] for s in samples), default=0), "machine": {"cpus": os.cpu_count(), "loadavg_1m_start": load0, "loadavg_1m_end": round(os.getloadavg()[0], 2)},
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""Simulated agents for ``bench/fleet/run.py``: one worker process runs a share of them on its own event loop.

A worker is started as ``python bench/fleet/agents.py`` with its settings as JSON on the command line. It
prepares its agents' batches first (real metered records, encoded once per agent into a few variants by
``cloudtap.ship.wire.encode_sections``; each send only frames them under the next sequence number, as cheap as
a real agent's resend of a spooled batch), prints ``ready``, waits for ``go`` on stdin, runs for the given
duration, and prints its figures as one JSON line. Several workers offer more load than one Python process
can: 500 agents in one event loop spent their time encoding and queueing, not sending.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa

TOKEN = "bench-token"  # the controller bootstrap token agents register with
VARIANTS = 2  #: encoded batches per agent, sent in turn (different rows of the same capture)


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
    """``rows`` rows of ``table`` from ``start`` on (wrapping), with ``agent_id`` set to ``agent``."""
    n = table.num_rows
    part = table.take(pa.array([(start + i) % n for i in range(rows)]))
    col = part.column_names.index("agent_id")
    return part.set_column(col, "agent_id", pa.array([agent] * rows, pa.string()))


@dataclass
class Stats:
    """What one worker's agents saw (merged over workers by the driver)."""

    hb_ms: list[float] = field(default_factory=list)
    hb_errors: int = 0
    registered: int = 0
    register_errors: list[str] = field(default_factory=list)
    rows_sent: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    ship_errors: list[str] = field(default_factory=list)
    ship_ms: list[float] = field(default_factory=list)
    last_refusal: str = ""
    commands_at: dict[str, float] = field(default_factory=dict)  #: agent name -> wall time its command arrived
    cpu_s: float = 0.0

    def merge(self, other: dict[str, Any]) -> None:
        """Add another worker's figures (as printed by :func:`worker`)."""
        for name in ("hb_ms", "register_errors", "ship_errors", "ship_ms"):
            getattr(self, name).extend(other[name])
        for name in ("hb_errors", "registered", "batches"):
            setattr(self, name, getattr(self, name) + other[name])
        for kind, n in other["rows_sent"].items():
            self.rows_sent[kind] = self.rows_sent.get(kind, 0) + n
        self.commands_at.update(other["commands_at"])
        self.last_refusal = other["last_refusal"] or self.last_refusal
        self.cpu_s += other["cpu_s"]


async def agent(name: str, url: str, cfg: dict[str, Any], sections: list[Any], stats: Stats, stop_at: float) -> None:
    """One agent: register, heartbeat, keep a command long-poll open, ship its batches until ``stop_at``."""
    from cloudtap.ship.wire import frame_sections

    headers = {"Authorization": f"Bearer {TOKEN}"}
    limits = httpx.Limits(max_connections=3, max_keepalive_connections=3)
    heartbeat_s, ship_every = cfg["heartbeat"], cfg["ship_every"]
    i = int(name.rsplit("-", 1)[1])
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60, limits=limits) as client:
        await asyncio.sleep(random.uniform(0, heartbeat_s))  # agents do not start in lockstep
        body = {"name": name, "hostname": f"hv-{i:04d}", "machine_id": f"m{i:08x}", "group": "bench",
                "mode": "interfaces", "heartbeat_s": heartbeat_s}  # fmt: skip
        r = await client.post("/api/v1/agents/register", json=body)
        if r.status_code != 200:
            stats.register_errors.append(r.text)
            return
        aid = r.json()["agent_id"]
        client.headers["Authorization"] = f"Bearer {r.json()['credential']}"  # the agent's own from now on
        stats.registered += 1

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
                await asyncio.sleep(heartbeat_s)

        async def ship() -> None:
            seq = 0
            await asyncio.sleep(random.uniform(0, ship_every))
            while time.monotonic() < stop_at:
                seq += 1
                encoded = sections[seq % len(sections)]
                data = frame_sections(name, seq, encoded)
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
                        for s in encoded:
                            stats.rows_sent[s.entry.kind] = stats.rows_sent.get(s.entry.kind, 0) + s.entry.rows
                        break
                    stats.ship_errors.append(f"HTTP {resp.status_code}")
                    stats.last_refusal = resp.text[:200]
                    retry = resp.headers.get("Retry-After")
                    await asyncio.sleep(float(retry) if retry and retry.isdigit() else 0.5)
                await asyncio.sleep(ship_every)

        async def commands() -> None:
            while time.monotonic() < stop_at:
                try:
                    wait = max(0.0, min(25.0, stop_at - time.monotonic()))
                    resp = await client.get(f"/api/v1/agents/{aid}/commands", params={"wait": wait})
                except httpx.HTTPError:
                    await asyncio.sleep(1)
                    continue
                if resp.status_code == 200 and resp.json().get("commands"):
                    stats.commands_at.setdefault(name, time.time())

        tasks = [heartbeats()] + ([ship()] if ship_every > 0 else []) + ([commands()] if cfg["commands"] else [])
        await asyncio.gather(*tasks)


def prepare(names: list[str], tables: dict[str, pa.Table], rows: int) -> dict[str, list[Any]]:
    """Each agent's encoded batch variants (``rows`` rows of every kind, its own ``agent_id``)."""
    from cloudtap.ship.wire import encode_sections

    out: dict[str, list[Any]] = {}
    for name in names:
        out[name] = [
            encode_sections({k: with_agent(t, random.randrange(t.num_rows), rows, name) for k, t in tables.items()})
            for _ in range(VARIANTS)
        ]
    return out


def worker(cfg: dict[str, Any]) -> None:
    """Run this worker's agents (``cfg``: url, names, rows, duration, heartbeat, ship_every, commands, work)."""
    tables = records(Path(cfg["work"]))
    sections = prepare(cfg["names"], tables, cfg["rows"]) if cfg["ship_every"] > 0 else {}
    print("ready", flush=True)
    sys.stdin.readline()  # "go": every worker starts at once
    stats = Stats()
    cpu0 = time.process_time()
    stop_at = time.monotonic() + cfg["duration"]

    async def everything() -> None:
        await asyncio.gather(
            *(agent(n, cfg["url"], cfg, sections.get(n, []), stats, stop_at) for n in cfg["names"])
        )

    asyncio.run(everything())
    stats.cpu_s = time.process_time() - cpu0
    print(json.dumps(asdict(stats)), flush=True)


if __name__ == "__main__":
    worker(json.loads(sys.argv[1]))

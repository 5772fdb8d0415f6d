"""Server benchmark: ingest rows/s (HTTP end to end, storage alone), query latency at 10M (100M) flows, vs nfdump.

The flows are real meter output: ``cloudtap synth bench`` writes a 30-minute capture of a busy small cloud,
``import_tables`` meters it into the tables an agent ships (flows, 1 s and 60 s edges), and the same
capture goes through ``nfpcapd`` for nfdump. The 30-minute slice is then replicated, each copy shifted by
30 minutes, up to the wanted number of stored flow records (the nfdump side reads as many copies of its
file, hard links), so both tools answer over the same flows.

1. **HTTP end to end**: a real ``cloudtap server run`` process on its own chDB path; the agent's
   shipping stack (``ServerSink`` + ``Spool`` + ``HttpTransport``, agent defaults) sends replicas; rows/s
   from the first write until the last batch is acknowledged, and rows per server CPU-second.
2. **Storage alone**: ``ClickHouseStore.insert`` in this process, one batch per replica (all three kinds).
3. **Queries** through ``QueryEngine`` (what the API runs), best of 3: top-10 (client, server, port) and
   top-10 server ports by bytes over the whole range (answered from the rollups, ``meta.read``), the same
   top-10 forced onto the flow log, an hourly series of everything and a 1-minute series of one edge
   over its last 6 h; nfdump ``-A srcip,dstip,dstport -O bytes -n 10`` and ``-s dstport/bytes -n 10``.

Usage: ``python bench/server/run.py [--flows 10000000] [--big] [--big-edges] [--http-replicas 10] [--work DIR]``
(``--big`` adds 100M flows with all their edges: ~20 GB of chDB, ~30 min on 2 busy cores;
``--big-edges`` adds the same 100M flows' 60 s edges only, which is all the tiered top-N and series
read, in a few minutes). Results: ``bench/results/server.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
SLICE_S = 1800  #: the synthesised capture covers 30 minutes
RESULTS = REPO / "bench" / "results" / "server.json"
_TIME_COLUMNS = {"flows": ("start_ns", "first_ns", "last_ns"), "edges_1s": ("time_ns",), "edges_60s": ("time_ns",)}


# --- data -----------------------------------------------------------------------------------------


def prepare(work: Path) -> tuple[dict[str, pa.Table], Path]:
    """The metered 30-minute slice (agent tables) and the nfcapd file nfpcapd made from the same capture."""
    from cloudtap.server.importer import import_tables

    pcap = work / "bench-30m.pcap"
    if not pcap.exists():
        _run([str(VENV_BIN / "cloudtap"), "synth", "bench", "-o", str(pcap), "--duration", "30m", "-q"])
    imported = import_tables([pcap])
    nfc = work / "nfcapd-1"
    if not any(nfc.glob("nfcapd.*")):
        nfc.mkdir(parents=True, exist_ok=True)
        _run(["nfpcapd", "-r", str(pcap), "-w", str(nfc), "-t", "3600"])
    files = sorted(nfc.glob("nfcapd.2*"))
    assert len(files) == 1, files
    return imported.tables, files[0]


def replica(tables: dict[str, pa.Table], i: int) -> dict[str, pa.Table]:
    """Copy ``i`` of the slice: every time shifted by ``i`` x 30 min (flow ids too, so they stay unique)."""
    out = {}
    for kind, t in tables.items():
        for name in _TIME_COLUMNS[kind]:
            col = t[name]
            t = t.set_column(t.schema.get_field_index(name), name,
                             pc.add(col, pa.scalar(i * SLICE_S * 10**9, col.type)))  # fmt: skip
        if kind == "flows":
            col = t["flow_id"]
            t = t.set_column(t.schema.get_field_index("flow_id"), "flow_id",
                             pc.add(col, pa.scalar(i << 40, col.type)))  # fmt: skip
        out[kind] = t
    return out


def nfdump_dir(nfcapd_file: Path, copies: int, work: Path) -> Path:
    """A directory holding ``copies`` hard links of the nfcapd file (nfdump reads them all with -R)."""
    d = work / f"nfcapd-x{copies}"
    if d.exists():
        shutil.rmtree(d)
    d.mkdir()
    for i in range(copies):
        os.link(nfcapd_file, d / f"nfcapd.2026112{i // 10000:01d}{i % 10000:04d}0")
    return d


# --- measuring ------------------------------------------------------------------------------------


def _run(cmd: list[str]) -> str:
    env = dict(os.environ, NUMBA_CACHE_DIR=os.environ.get("NUMBA_CACHE_DIR", str(REPO / ".numba-cache")))
    return subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout


def _cpu_self() -> float:
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


def _cpu_pid(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _best(fn: Any, repeat: int = 3) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _rows(tables: dict[str, pa.Table]) -> int:
    return sum(t.num_rows for t in tables.values())


def http_ingest(tables: dict[str, pa.Table], replicas: int, work: Path) -> dict[str, Any]:
    """Ship ``replicas`` copies through the agent's shipping stack to a real server process."""
    from cloudtap.ship.server_sink import ServerSink
    from cloudtap.ship.spool import Spool
    from cloudtap.ship.transport import HttpTransport

    root = work / "http"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir()
    status = root / "url"
    config = root / "server.yaml"
    (root / "admin-password").write_text("bench admin password")
    config.write_text(json.dumps({"storage": {"dsn": f"chdb://{root / 'chdb'}", "database": "bench"},
                                  "api": {"port": 0, "status_file": str(status)},
                                  "auth": {"admin_password_file": str(root / "admin-password")},
                                  "controller": {"token": "bench-bootstrap"}}))  # fmt: skip
    env = dict(os.environ, NUMBA_CACHE_DIR=str(REPO / ".numba-cache"))
    log = (root / "server.log").open("w")
    proc = subprocess.Popen([str(VENV_BIN / "cloudtap"), "server", "run", "--config", str(config)],
                            stdout=log, stderr=subprocess.STDOUT, env=env)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not status.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start: {(root / 'server.log').read_text()[-2000:]}")
            time.sleep(0.1)
        url = status.read_text().strip()
        import httpx

        # the shipping agent registers for its own credential; the admin reads the ingest counters
        registered = httpx.post(url + "/api/v1/agents/register", headers={"Authorization": "Bearer bench-bootstrap"},
                                json={"name": "bench-agent", "hostname": "bench-host", "machine_id": "bench"},
                                timeout=60).json()  # fmt: skip
        admin = httpx.post(url + "/api/v1/auth/token", json={"username": "admin", "password": "bench admin password",
                                                             "name": "bench"}, timeout=60).json()["token"]  # fmt: skip
        copies = [replica(tables, i) for i in range(replicas)]
        cpu0, t0 = _cpu_pid(proc.pid), time.perf_counter()
        transport = HttpTransport(url + "/api/v1/ingest", timeout_s=60.0, token=registered["credential"])
        sink = ServerSink("bench-agent", transport, Spool(root / "spool", max_bytes=8 << 30))
        for copy in copies:
            for kind, t in copy.items():
                sink.write(kind, t)
        sink.close(timeout_s=1800)
        wall, cpu = time.perf_counter() - t0, _cpu_pid(proc.pid) - cpu0
        stats = sink.stats()
        health = httpx.get(url + "/api/v1/ingest/stats", headers={"Authorization": f"Bearer {admin}"}, timeout=30).json()
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    rows = sum(_rows(c) for c in copies)
    stored = sum(health["rows"].values())
    assert stored == rows, (stored, rows, stats)
    flows = replicas * tables["flows"].num_rows
    return {"replicas": replicas, "rows": rows, "flow_rows": flows, "batches": stats.sent_batches,
            "wire_mb": stats.sent_bytes / 1e6, "wall_s": wall, "rows_per_s": rows / wall,
            "flow_rows_per_s": flows / wall, "server_cpu_s": cpu, "rows_per_server_cpu_s": rows / cpu}  # fmt: skip


def wait_merges(store: Any, database: str, quiet_s: float = 2.0, timeout_s: float = 900.0) -> float:
    """Wait until no merge has run on ``database`` for ``quiet_s``; returns the seconds waited."""
    t0 = last_busy = time.perf_counter()
    while time.perf_counter() - last_busy < quiet_s and time.perf_counter() - t0 < timeout_s:
        if int(store.command(f"SELECT count() FROM system.merges WHERE database = '{database}'")):
            last_busy = time.perf_counter()
        time.sleep(0.2)
    return time.perf_counter() - t0


def storage(
    tables: dict[str, pa.Table],
    replicas: int,
    work: Path,
    nfcapd_file: Path,
    kinds: tuple[str, ...] = (),
    views: bool = True,
) -> dict[str, Any]:
    """Insert ``replicas`` copies in-process, then time the queries and nfdump over the same flows.

    ``kinds`` limits what is stored (``("edges_60s",)``: only what the tiered queries read).
    ``views=False`` drops the materialized views first (insert cost of the raw tables alone; no
    queries then, the rollups stay empty).

    CPU into storage is the whole process from the first insert until background merges went quiet,
    less the main thread's time making the replicas; ``insert_cpu_s`` is the part spent inside
    ``insert()`` (merges overlapping it included).
    """
    from cloudtap.server.query.engine import QueryEngine
    from cloudtap.server.query.model import Query
    from cloudtap.server.store.base import BatchKey
    from cloudtap.server.store.clickhouse import ClickHouseStore
    from cloudtap.server.store.ddl import VIEWS

    path = work / f"chdb-{replicas}"
    shutil.rmtree(path, ignore_errors=True)
    store = ClickHouseStore(f"chdb://{path}", database="bench")
    fig: dict[str, Any] = {"replicas": replicas, "kinds": list(kinds or tables), "views": views}
    if kinds:
        tables = {k: t for k, t in tables.items() if k in kinds or k == "flows"}
    try:
        store.migrate()
        if not views:
            for name in VIEWS:
                store.command(f"DROP VIEW IF EXISTS {store.ctx.local(name)}")
        wait_merges(store, "bench")
        ins_s = cpu_s = gen_s = 0.0
        rows = 0
        c_start = _cpu_self()
        for i in range(replicas):
            g0 = time.thread_time()
            copy = replica(tables, i)
            if kinds:
                copy = {k: t for k, t in copy.items() if k in kinds}
            gen_s += time.thread_time() - g0
            c0, t0 = _cpu_self(), time.perf_counter()
            store.insert(copy, BatchKey("bench", i))
            ins_s += time.perf_counter() - t0
            cpu_s += _cpu_self() - c0
            rows += _rows(copy)
        fig["merge_wait_s"] = wait_merges(store, "bench")
        all_s = _cpu_self() - c_start - gen_s
        flows = replicas * tables["flows"].num_rows
        fig.update(rows=rows, flow_rows=flows, insert_s=ins_s, rows_per_s=rows / ins_s,
                   flow_rows_per_s=flows / ins_s, insert_cpu_s=cpu_s, rows_per_insert_cpu_s=rows / cpu_s,
                   storage_cpu_s=all_s, rows_per_cpu_s=rows / all_s, flow_rows_per_cpu_s=flows / all_s)  # fmt: skip
        counts = store.query_arrow(
            "SELECT table, sum(rows) AS n, sum(bytes_on_disk) AS b FROM system.parts "
            "WHERE database = 'bench' AND active GROUP BY table"
        ).to_pylist()
        fig["stored_rows"] = {r["table"]: int(r["n"]) for r in counts}
        fig["disk_mb"] = sum(int(r["b"]) for r in counts) / 1e6
        fig["active_parts"] = int(store.command("SELECT count() FROM system.parts WHERE database = 'bench' AND active"))
        if not views:
            return fig

        start = int(pc.min(tables["flows"]["first_ns"]).as_py())
        end = start + replicas * SLICE_S * 10**9
        engine = QueryEngine(store, clock=lambda: end)
        top = tables["edges_60s"].group_by(["client_ip", "server_ip", "server_port"]).aggregate(
            [("bytes_c2s", "sum")]).sort_by([("bytes_c2s_sum", "descending")]).to_pylist()[0]  # fmt: skip
        queries = {
            "top_edges": {"time_from": "all", "group_by": ["client_ip", "server_ip", "server_port"],
                          "metrics": ["bytes"], "limit": 10},
            "top_edges_flow_log": {"time_from": "all", "table": "flows",
                                   "group_by": ["client_ip", "server_ip", "server_port"], "metrics": ["bytes"],
                                   "limit": 10},
            "top_ports": {"time_from": "all", "group_by": ["server_port"], "metrics": ["bytes"], "limit": 10},
            "series_1h_all": {"time_from": "all", "metrics": ["bytes", "flows"], "step": "1h"},
            "series_1m_edge_6h": {"time_from": "-6h", "metrics": ["bytes"], "step": "1m", "filters": [
                {"dim": "client_ip", "value": top["client_ip"]}, {"dim": "server_ip", "value": top["server_ip"]},
                {"dim": "server_port", "value": top["server_port"]}]},
        }  # fmt: skip
        fig["queries"] = {}
        for name, body in queries.items():
            if kinds and "flows" not in kinds and body.get("table") == "flows":
                continue
            query = Query.model_validate(body)
            seconds, result = _best(lambda q=query: engine.run(q))
            fig["queries"][name] = {
                "s": seconds,
                "rows": result.table.num_rows,
                "read": sorted({r["stored_table"] for r in result.meta["read"]}),
                "first": {k: (v if isinstance(v, int | float | str) else str(v))
                          for k, v in (result.table.to_pylist() or [{}])[0].items()},
            }  # fmt: skip
    finally:
        store.close()
        shutil.rmtree(path, ignore_errors=True)
    nfdir = nfdump_dir(nfcapd_file, replicas, work)
    try:
        for name, args in (("top_edges", ["-A", "srcip,dstip,dstport", "-O", "bytes", "-n", "10"]),
                           ("top_ports", ["-s", "dstport/bytes", "-n", "10"])):  # fmt: skip
            seconds, out = _best(lambda a=args: _run(["nfdump", "-R", str(nfdir), "-q", *a]))
            fig["queries"][name]["nfdump_s"] = seconds
            fig["queries"][name]["nfdump_first"] = out.strip().splitlines()[0] if out.strip() else ""
        summary = _run(["nfdump", "-R", str(nfdir), "-s", "dstport/bytes", "-n", "1"])
        fig["nfdump_records"] = int(summary.split("total flows: ")[1].split(",")[0])
    finally:
        shutil.rmtree(nfdir, ignore_errors=True)
    return fig


# --- report ---------------------------------------------------------------------------------------


def report(http: dict[str, Any] | None, runs: list[dict[str, Any]]) -> str:
    """The figures as text."""
    lines = []
    if http:
        lines += [
            f"HTTP end to end ({http['replicas']} x 30 min, agent ServerSink -> `cloudtap server run`, chDB"
            + (f", measured {http['date']}" if http.get("date") else "") + "):",
            f"  {http['rows']:,} rows ({http['flow_rows']:,} flow records + 1 s / 60 s edges) in "
            f"{http['batches']} batches, {http['wire_mb']:.0f} MB on the wire, {http['wall_s']:.1f} s",
            f"  {http['rows_per_s'] / 1e6:.2f} M rows/s ({http['flow_rows_per_s'] / 1e6:.2f} M flow records/s) wall; "
            f"{http['rows_per_server_cpu_s'] / 1e6:.2f} M rows per server CPU-second",
            "",
        ]
    for fig in runs:
        lines += [
            f"Storage alone, {fig['flow_rows'] / 1e6:.1f}M flow records"
            + ("" if "flows" in fig["kinds"] else " (only their 60 s edges stored, what the tiered queries read)")
            + ("" if fig.get("views", True) else ", materialized views dropped")
            + f" ({fig['rows'] / 1e6:.1f}M rows inserted; "
            f"stored {', '.join(f'{k} {v / 1e6:.1f}M' for k, v in sorted(fig['stored_rows'].items()) if v)}; "
            f"{fig['disk_mb']:.0f} MB):",
            f"  insert {fig['rows_per_s'] / 1e6:.2f} M rows/s wall"
            + (f" ({fig['flow_rows_per_s'] / 1e6:.2f} M flow records/s)" if "flows" in fig["kinds"] else "")
            + (f"; {fig['rows_per_cpu_s'] / 1e6:.2f} M rows per CPU-second inside insert() "
               f"({fig['date']}: {fig['note']})" if fig.get("note") else
               f"; {fig['rows_per_cpu_s'] / 1e6:.2f} M rows per CPU-second into storage "
               f"({fig['storage_cpu_s']:.1f} CPU-s until merges went quiet; "
               f"{fig['rows_per_insert_cpu_s'] / 1e6:.2f} M per CPU-second inside insert())"),  # fmt: skip
        ]
        if not fig.get("queries"):
            lines.append("")
            continue
        lines.append(f"  {'query':<22} {'cloudtap':>10} {'read from':<32} {'nfdump':>10} {'nfdump/cloudtap':>15}")
        for name, q in fig["queries"].items():
            nf = q.get("nfdump_s")
            ratio = f"{nf / q['s']:.1f}x" if nf else ""
            nf_text = f"{nf * 1e3:.0f} ms" if nf else ""
            lines.append(f"  {name:<22} {q['s'] * 1e3:>7.0f} ms {','.join(q['read']):<32} {nf_text:>10} {ratio:>15}")
        lines.append(f"  (nfdump read {fig['nfdump_records']:,} unidirectional records made by nfpcapd)")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flows", type=int, default=10_000_000, help="stored flow records (default 10M)")
    parser.add_argument("--big", action="store_true", help="also 100M flow records, all kinds (slow: ~30 min)")
    parser.add_argument("--big-edges", action="store_true",
                        help="also 100M flow records' worth of 60 s edges only (~3 min): the tiered queries")  # fmt: skip
    parser.add_argument("--http-replicas", type=int, default=10,
                        help="30-min copies sent over HTTP (0: skip, keeping the HTTP figures of --out)")  # fmt: skip
    parser.add_argument("--no-views", action="store_true",
                        help="also store the --flows run with the materialized views dropped (insert cost alone)")  # fmt: skip
    parser.add_argument("--work", type=Path, default=None, help="work directory (default: a temp dir, removed)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results JSON")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="cloudtap-server-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        tables, nfcapd_file = prepare(work)
        per = tables["flows"].num_rows
        http = http_ingest(tables, args.http_replicas, work) if args.http_replicas else _previous_http(args.out)
        _save(args.out, per, http, [])
        plan: list[tuple[int, tuple[str, ...], bool]] = [(args.flows, (), True)]
        plan += [(args.flows, (), False)] if args.no_views else []
        plan += [(100_000_000, (), True)] if args.big else []
        plan += [(100_000_000, ("edges_60s",), True)] if args.big_edges else []
        runs: list[dict[str, Any]] = []
        for n, kinds, views in plan:
            runs.append(storage(tables, max(1, round(n / per)), work, nfcapd_file, kinds, views))
            _save(args.out, per, http, runs)  # figures so far, in case a long run is stopped
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print(report(http, runs))


def _previous_http(out: Path) -> dict[str, Any] | None:
    """The HTTP figures of an earlier run (kept when this run skips HTTP), with their date."""
    try:
        old = json.loads(out.read_text())
    except (OSError, ValueError):
        return None
    http = old.get("http")
    if http:
        http.setdefault("date", old.get("date"))
    return http


def _save(out: Path, per: int, http: dict[str, Any] | None, runs: list[dict[str, Any]]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "cores": os.cpu_count(),
                               "slice_flow_records": per, "http": http, "storage": runs,
                               "text": report(http, runs).splitlines()}, indent=1, default=str) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()

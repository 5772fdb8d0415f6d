"""Insert routes and settings into embedded chDB: CPU per row of each way of getting an Arrow block in.

The rows are real meter output: the 30-minute slice of ``bench/server/run.py`` (``cloudtap synth bench``
metered by ``import_tables``: flows, 1 s and 60 s edges with the agent's exact Arrow schema), copies of it
shifted in time. CPU is the whole process's (``time.process_time``: all of chDB's threads), rounds
interleaved with a different first each round, median and best of ``--rounds``; the machine is shared,
so read ±20 %. Each table's last column is the ratio against its first row.

1. **Routes** (``routes``): one flow block of ``--slices-per-insert`` slices into a ``Null`` copy of
   ``flow_log`` (the reading alone) and into ``flow_log`` itself (merges stopped: the insert alone).
   The first row is the route as it was before 2026-12-06, ``INSERT ... SELECT ... FROM Python(table)``
   with every Arrow field nullable (chDB then reads ``Nullable(T)`` and the insert converts each column);
   ``python_arrow_not_null`` is the store's route now (null-free fields declared non-nullable). The
   others: the addresses left to the implicit conversion, a pandas frame in ``Python()`` (a dict of numpy
   arrays is refused: chDB wants lists), the addresses parsed to 16 bytes in Python (``ip_binary``: the
   distinct texts once, then ``take``), a file in ``/dev/shm`` (Arrow, ArrowStream, uncompressed Parquet)
   read by ``file()`` or ``FROM INFILE``, an Arrow stream pushed through ``send_insert``, and
   clickhouse-connect's own ``insert_arrow`` on chDB (a temporary file and ``FROM INFILE``). Writing the
   file or the bytes is counted.
2. **Kinds** (``kinds``): each kind alone with its views, and all three, through ``ClickHouseStore.insert``
   (what the API runs), CPU from the first insert until background merges went quiet, like
   docs/storage.md's table.
3. **Settings** (``settings``): all three kinds the same way, once per settings variant (``VARIANTS``:
   query settings of the inserts, MergeTree settings of every table), each in a database of its own.

Usage: ``python bench/server/insert_routes.py [--work DIR] [--slices 8] [--slices-per-insert 1] [--rounds 3]
[--only routes|kinds|settings] [--variants today,combined]`` (``--work`` holding ``bench-30m.pcap`` from an
earlier ``run.py --work`` saves synthesising it). Results: ``bench/results/insert_routes.json``, one entry
per ``--slices-per-insert``.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as server_bench  # noqa: E402  (the slice and its time-shifted copies)

from cloudtap.server.store import clickhouse  # noqa: E402
from cloudtap.server.store.base import BatchKey  # noqa: E402
from cloudtap.server.store.clickhouse import (  # noqa: E402
    INSERT_SETTINGS,
    ClickHouseStore,
    not_null_fields,
    prepare_table,
)
from cloudtap.server.store.ddl import TABLES, ident  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "bench" / "results" / "insert_routes.json"
SHM = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
BASELINE = "python_arrow_nullable"  #: the route before 2026-12-06: every Arrow field nullable

#: Settings variants: (query settings added to every data insert, MergeTree settings of every table).
VARIANTS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "today": ({}, {}),
    "nullable_fields_before": ({}, {}),  # today's settings, Arrow fields left nullable (see ``_stored_cpu``)
    "parallel_view_processing": ({"parallel_view_processing": 1}, {}),
    "no_skip_index_on_insert": ({"materialize_skip_indexes_on_insert": 0}, {}),
    "compact_insert_parts": ({}, {"min_level_for_wide_part": 1}),
    "no_sparse_columns": ({}, {"ratio_of_defaults_for_sparse_serialization": 1}),
    "sampled_sparse_check": ({}, {"compute_exact_num_defaults_for_sparse_columns": 0}),
    "merge_selector_base_10": ({}, {"merge_selector_base": 10}),
    "horizontal_merges": ({}, {"enable_vertical_merge_algorithm": 0}),
    "combined": (
        {"parallel_view_processing": 1, "materialize_skip_indexes_on_insert": 0},
        {"min_level_for_wide_part": 1, "compute_exact_num_defaults_for_sparse_columns": 0},
    ),
}


def _cpu() -> float:
    return time.process_time()


# --- routes ---------------------------------------------------------------------------------------


class RouteBench:
    """One prepared flow block and the ways of inserting it into a table of a chDB store."""

    def __init__(self, store: ClickHouseStore, block: pa.Table) -> None:
        self.store, self.block, self.rows = store, block, block.num_rows
        self.chdb = store._chdb
        self.addresses = {c.name for c in TABLES["flow_log"].columns if c.type == "IPv6"}
        self.names = ", ".join(ident(n) for n in block.column_names)
        self.settings = {"max_threads": 1, "max_insert_threads": 1, "min_insert_block_size_bytes": 0,
                         "min_insert_block_size_rows": self.rows, "max_insert_block_size": max(self.rows, 1_048_449),
                         **INSERT_SETTINGS}  # fmt: skip
        self.inserts = 0

    @property
    def clause(self) -> str:
        """The insert's SETTINGS, with a new deduplication token each time (as the store passes one)."""
        self.inserts += 1
        token = {"insert_deduplication_token": f"'route-{self.inserts}'"}
        return " SETTINGS " + ", ".join(f"{k} = {v}" for k, v in {**self.settings, **token}.items())

    def _exprs(self, cast: bool = True) -> str:
        return ", ".join(
            f"CAST({ident(n)}, 'IPv6')" if cast and n in self.addresses else ident(n)
            for n in self.block.column_names
        )

    def routes(self) -> dict[str, Callable[[str], None]]:
        return {
            BASELINE: lambda t: self._python(t, self.block),
            "python_arrow_not_null (now)": lambda t: self._python(t, not_null_fields(self.block)),
            "python_arrow_implicit_ip": lambda t: self._python(t, self.block, cast=False),
            "python_pandas": lambda t: self._python(t, self.block.to_pandas()),
            "ip_binary": lambda t: self._python(
                t, not_null_fields(_binary_addresses(self.block, self.addresses))
            ),
            "file_arrow": lambda t: self._file(t, "Arrow"),
            "file_arrowstream": lambda t: self._file(t, "ArrowStream"),
            "file_parquet": lambda t: self._file(t, "Parquet"),
            "infile_arrowstream": self._infile,
            "send_insert_arrowstream": self._send_insert,
            "clickhouse_connect_insert_arrow": self._clickhouse_connect,
        }

    def _python(self, target: str, holder: Any, cast: bool = True) -> None:
        block = holder  # noqa: F841  (read by name by Python())
        self.chdb.query(
            f"INSERT INTO {target} ({self.names}) SELECT {self._exprs(cast)} FROM Python(block){self.clause}"
        )

    def _file(self, target: str, fmt: str) -> None:
        path = SHM / f"cloudtap-insert-route-{os.getpid()}.{fmt.lower()}"
        try:
            _write_file(self.block, path, fmt)
            self.chdb.query(
                f"INSERT INTO {target} ({self.names}) SELECT {self._exprs()} FROM file('{path}', {fmt}){self.clause}"
            )
        finally:
            path.unlink(missing_ok=True)

    def _infile(self, target: str) -> None:
        path = SHM / f"cloudtap-insert-route-{os.getpid()}.arrows"
        try:
            _write_file(self.block, path, "ArrowStream")
            self.chdb.query(
                f"INSERT INTO {target} ({self.names}) FROM INFILE '{path}'{self.clause} FORMAT ArrowStream"
            )
        finally:
            path.unlink(missing_ok=True)

    def _send_insert(self, target: str) -> None:
        sink = pa.BufferOutputStream()
        with ipc.new_stream(sink, self.block.schema) as writer:
            writer.write_table(self.block)
        with self.chdb.send_insert(f"INSERT INTO {target} ({self.names}){self.clause}", "ArrowStream") as ins:
            ins.append(sink.getvalue().to_pybytes())
            ins.finish()

    def _clickhouse_connect(self, target: str) -> None:
        self.inserts += 1
        token = {"insert_deduplication_token": f"route-{self.inserts}"}
        self.store._client.insert_arrow(target, self.block, settings={**self.settings, **token})


def _write_file(block: pa.Table, path: Path, fmt: str) -> None:
    if fmt == "Parquet":
        pq.write_table(block, path, compression="none", use_dictionary=False)
        return
    opener = ipc.new_file if fmt == "Arrow" else ipc.new_stream
    with opener(str(path), block.schema) as writer:
        writer.write_table(block)


def _binary_addresses(block: pa.Table, addresses: set[str]) -> pa.Table:
    """``block`` with each address column as 16-byte binary: the distinct texts parsed once, then taken."""
    for name in addresses & set(block.column_names):
        encoded = pc.dictionary_encode(block.column(name)).combine_chunks()
        packed = [ipaddress.IPv6Address(_v6_text(t)).packed for t in encoded.dictionary.to_pylist()]
        values = pc.take(pa.array(packed, pa.binary(16)), encoded.indices)
        block = block.set_column(block.schema.get_field_index(name), name, values)
    return block


def _v6_text(text: str) -> str:
    return text if ":" in text else "::ffff:" + text


def measure_routes(store: ClickHouseStore, block: pa.Table, rounds: int) -> list[dict[str, Any]]:
    """CPU µs per row of every route into a ``Null`` copy of ``flow_log`` and into ``flow_log`` (merges stopped)."""
    store.command("CREATE TABLE IF NOT EXISTS flow_null AS flow_log ENGINE = Null")
    store.command("SYSTEM STOP MERGES")
    bench = RouteBench(store, block)
    routes = bench.routes()
    _check_ip_binary(store, bench)
    out = []
    for target in ("flow_null", "flow_log"):
        samples: dict[str, list[float]] = {name: [] for name in routes}
        for _ in range(rounds):
            for name, insert in routes.items():
                if target == "flow_log":
                    store.command("TRUNCATE TABLE flow_log")
                c0 = _cpu()
                insert(f"{store.database}.{target}")
                samples[name].append((_cpu() - c0) / block.num_rows * 1e6)
        out += [_summary(f"{target}: {name}", s, samples[BASELINE]) for name, s in samples.items()]
    store.command("TRUNCATE TABLE flow_log")
    store.command("SYSTEM START MERGES")
    return out


def _check_ip_binary(store: ClickHouseStore, bench: RouteBench) -> None:
    """The binary route must store the same addresses as the text cast."""
    store.command("CREATE TABLE IF NOT EXISTS flow_check AS flow_log ENGINE = Memory")
    head = bench.block.slice(0, 1000)
    for holder in (head, _binary_addresses(head, bench.addresses)):
        block = holder  # noqa: F841
        bench.chdb.query(
            f"INSERT INTO {store.database}.flow_check ({bench.names}) SELECT {bench._exprs()} FROM Python(block)"
        )
    distinct = store.command("SELECT uniqExact(flow_id, client_ip, server_ip) FROM flow_check")
    if int(distinct) != 1000:
        raise AssertionError(
            f"ip_binary stores other addresses than the text cast ({distinct} distinct rows)"
        )
    store.command("DROP TABLE flow_check")


def _summary(name: str, samples: list[float], baseline: list[float]) -> dict[str, Any]:
    med = statistics.median(samples)
    return {"name": name, "us_per_row": med, "best_us_per_row": min(samples), "rows_per_cpu_s": 1e6 / med,
            "vs_today": statistics.median(baseline) / med, "samples": samples}  # fmt: skip


# --- settings -------------------------------------------------------------------------------------


#: A stored run: (label, settings variant, kinds inserted).
Run = tuple[str, str, tuple[str, ...]]
ALL_KINDS = ("flows", "edges_1s", "edges_60s")
KIND_RUNS: list[Run] = [
    ("flows (flow_log)", "today", ("flows",)),
    ("1 s edges (edge_1s + endpoint_1s)", "today", ("edges_1s",)),
    ("60 s edges (edge_1m + three views)", "today", ("edges_60s",)),
    ("all three kinds", "today", ALL_KINDS),
]


def measure_stored(
    store: ClickHouseStore,
    tables: dict[str, pa.Table],
    runs: list[Run],
    slices: int,
    per_insert: int,
    rounds: int,
    compare: bool = True,
) -> list[dict[str, Any]]:
    """Rows per CPU-second into storage, merges included, of each run (interleaved, a new first each round).

    Every run inserts the same ``slices`` copies, ``per_insert`` joined per batch, through
    ``ClickHouseStore.insert`` into a database of its own made with the run's settings variant.
    ``compare``: give each run of the first run's kinds its ratio against the first run.
    """
    groups = []
    for first in range(0, slices, per_insert):
        copies = [server_bench.replica(tables, i) for i in range(first, min(first + per_insert, slices))]
        groups.append({k: pa.concat_tables([c[k] for c in copies]).combine_chunks() for k in tables})
    samples: dict[str, list[float]] = {label: [] for label, _, _ in runs}
    rows: dict[str, int] = {}
    _stored_cpu(store, "warm_up", "today", groups[:1])  # the first run of a process pays more
    for r in range(rounds):
        for i in [*range(r % len(runs), len(runs)), *range(r % len(runs))]:
            label, variant, kinds = runs[i]
            batches = [{k: g[k] for k in kinds} for g in groups]
            rows[label] = sum(t.num_rows for g in batches for t in g.values())
            cpu_s = _stored_cpu(store, f"v{r}_{i}", variant, batches)
            samples[label].append(rows[label] / cpu_s)
            print(f"  round {r + 1}: {label}: {samples[label][-1] / 1e6:.3f} M rows per CPU-s", flush=True)
    base = statistics.median(samples[runs[0][0]])
    same_kinds = {label for label, _, kinds in runs if kinds == runs[0][2]} if compare else set()
    return [{"name": label, "variant": variant, "kinds": list(kinds), "rows": rows[label],
             "rows_per_cpu_s": statistics.median(samples[label]), "best_rows_per_cpu_s": max(samples[label]),
             "us_per_row": 1e6 / statistics.median(samples[label]),
             "vs_today": statistics.median(samples[label]) / base if label in same_kinds else None,
             "samples": samples[label], "query_settings": VARIANTS[variant][0],
             "table_settings": VARIANTS[variant][1]} for label, variant, kinds in runs]  # fmt: skip


def _stored_cpu(
    store: ClickHouseStore,
    database: str,
    variant: str,
    batches: list[dict[str, pa.Table]],
) -> float:
    """CPU seconds of the process from the first insert of ``batches`` until merges went quiet."""
    name, (query_settings, table_settings) = variant, VARIANTS[variant]
    target = ClickHouseStore(store.dsn, database=database)
    if name == "nullable_fields_before":  # the insert as it was: every Arrow field nullable
        clickhouse.not_null_fields = lambda block: block  # type: ignore[assignment]
    try:
        target.migrate()
        for name, spec in TABLES.items():
            if spec.engine.endswith("MergeTree") and table_settings:
                setting = ", ".join(f"{k} = {v}" for k, v in table_settings.items())
                target.command(f"ALTER TABLE {ident(database)}.{ident(name)} MODIFY SETTING {setting}")
        target.insert_settings = {**INSERT_SETTINGS, **query_settings}
        _quiet(store)
        c0 = _cpu()
        for seq, batch in enumerate(batches):
            target.insert(batch, BatchKey("bench", seq))
        _quiet(store)
        cpu_s = _cpu() - c0
        target.command(f"DROP DATABASE {ident(database)} SYNC")
    finally:
        clickhouse.not_null_fields = not_null_fields
        target.close()
    return cpu_s


def _quiet(store: ClickHouseStore, quiet_s: float = 1.5, timeout_s: float = 900.0) -> None:
    """Wait until no merge (of any database) has run for ``quiet_s``."""
    t0 = last_busy = time.perf_counter()
    while time.perf_counter() - last_busy < quiet_s and time.perf_counter() - t0 < timeout_s:
        if int(store.command("SELECT count() FROM system.merges")):
            last_busy = time.perf_counter()
        time.sleep(0.1)


# --- main -----------------------------------------------------------------------------------------


def _table(title: str, rows: list[dict[str, Any]]) -> Table:
    table = Table(title=title)
    for col in ("route / setting", "µs per row (median)", "best", "M rows per CPU-s", "vs first row"):
        table.add_column(col, justify="left" if col.startswith("route") else "right")
    for r in rows:
        best = r["best_us_per_row"] if "best_us_per_row" in r else 1e6 / r["best_rows_per_cpu_s"]
        ratio = "" if r["vs_today"] is None else f"{r['vs_today']:.2f}x"
        table.add_row(
            r["name"], f"{r['us_per_row']:.3f}", f"{best:.3f}", f"{r['rows_per_cpu_s'] / 1e6:.2f}", ratio
        )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--work", type=Path, default=None, help="work dir (bench-30m.pcap is made there once)"
    )
    parser.add_argument(
        "--slices", type=int, default=8, help="30-minute copies stored per run (kinds, settings)"
    )
    parser.add_argument("--slices-per-insert", type=int, default=1, help="copies joined into one insert")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median and best reported)")
    parser.add_argument("--only", choices=("routes", "kinds", "settings"), default=None)
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help="settings variants to run (comma-separated)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="results JSON ('-': none)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="cloudtap-insert-routes-"))
    work.mkdir(parents=True, exist_ok=True)
    console = Console(width=150)
    per = args.slices_per_insert
    path = work / f"chdb-insert-routes-{os.getpid()}"
    result: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "cores": os.cpu_count(),
                              "slices_per_insert": args.slices_per_insert, "rounds": args.rounds}  # fmt: skip
    try:
        tables, _ = server_bench.prepare(work)
        store = ClickHouseStore(f"chdb://{path}", database="bench")
        try:
            store.migrate()
            if args.only in (None, "routes"):
                copies = [server_bench.replica(tables, i)["flows"] for i in range(args.slices_per_insert)]
                block = prepare_table("flows", pa.concat_tables(copies))
                result["route_block_rows"] = block.num_rows
                result["routes"] = measure_routes(store, block, args.rounds)
                _save(args.out, result)
                console.print(_table(f"flow block of {block.num_rows:,} rows, {block.num_columns} columns "
                                     f"(CPU of the process, {args.rounds} rounds)", result["routes"]))  # fmt: skip
            if args.only in (None, "kinds"):
                result["slices"] = args.slices
                result["kinds"] = measure_stored(
                    store, tables, KIND_RUNS, args.slices, per, args.rounds, False
                )
                console.print(_table(f"each kind with its views, {args.slices} slices, {per} per insert, "
                                     "merges included (today's settings)", result["kinds"]))  # fmt: skip
                _save(args.out, result)
            if args.only in (None, "settings"):
                result["slices"] = args.slices
                names = ["today", *(v for v in args.variants.split(",") if v != "today")]
                runs = [(name, name, ALL_KINDS) for name in names]
                result["settings"] = measure_stored(store, tables, runs, args.slices, per, args.rounds)
                console.print(_table(f"all kinds with their views, {result['settings'][0]['rows']:,} rows, "
                                     f"{args.slices} slices, {per} per insert, merges included",
                                     result["settings"]))  # fmt: skip
                _save(args.out, result)
        finally:
            store.close()
    finally:
        shutil.rmtree(path, ignore_errors=True)
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


def _save(out: Path, result: dict[str, Any]) -> None:
    """Write ``result`` under its ``slices_per_insert`` in ``out``, keeping the figures of other block sizes."""
    if str(out) == "-":
        return
    try:
        saved = json.loads(out.read_text())
    except (OSError, ValueError):
        saved = {}
    runs = saved.get("by_slices_per_insert", {})
    runs[str(result["slices_per_insert"])] = result
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"date": result["date"], "cores": result["cores"], "by_slices_per_insert": runs},
                              indent=1) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()

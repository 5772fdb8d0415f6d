"""QueryEngine: resolve a query's time range, compile it, run it on a FlowStore, shape the result."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from cloudtap.inventory.names import NameResolver
from cloudtap.server.query.catalog import NS_PER_S, StoredTable, candidates
from cloudtap.server.query.errors import QueryError
from cloudtap.server.query.model import Query
from cloudtap.server.query.names import Label, NamePlan, add_names, plan_names
from cloudtap.server.query.sql import CompiledQuery, OutputColumn, choose_table, compile_query
from cloudtap.server.query.tiers import coarser_tiers, plan_segments
from cloudtap.server.query.timespec import ALL, format_duration, iso, parse_instant
from cloudtap.server.store.base import FlowStore
from cloudtap.server.store.ddl import ident

ARROW_STREAM = "application/vnd.apache.arrow.stream"


@dataclass
class QueryStats:
    """What running a query cost."""

    rows: int  #: rows returned
    elapsed_ms: float
    truncated: bool = False  #: more rows matched than ``limit``
    rows_read: int | None = None  #: rows the store scanned, when it reports it


@dataclass
class QueryResult:
    """A query's answer: an Arrow table plus how it was obtained."""

    table: pa.Table
    stats: QueryStats
    columns: list[OutputColumn]
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """``{columns, rows, column_info, stats, meta}`` with times as ISO 8601 text and NaN as null."""
        rows = list(
            zip(*[_json_values(self.table.column(i)) for i in range(self.table.num_columns)], strict=True)
        )
        info = [
            {"name": c.name, "type": str(self.table.schema.field(c.name).type), "role": c.role, "agg": c.agg,
             "unit": c.unit}
            for c in self.columns
        ]  # fmt: skip
        return {
            "columns": [c.name for c in self.columns],
            "rows": [list(r) for r in rows],
            "column_info": info,
            "stats": asdict(self.stats),
            "meta": self.meta,
        }

    def to_arrow_ipc(self) -> bytes:
        """The table as an Arrow IPC stream; stats and meta ride in the schema metadata as JSON."""
        metadata = {
            b"cloudtap.stats": json.dumps(asdict(self.stats)).encode(),
            b"cloudtap.meta": json.dumps(self.meta).encode(),
            b"cloudtap.columns": json.dumps([asdict(c) for c in self.columns]).encode(),
        }
        table = self.table.replace_schema_metadata(metadata)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return bytes(sink.getvalue().to_pybytes())

    @classmethod
    def from_arrow_ipc(cls, data: bytes) -> QueryResult:
        """Rebuild a result from :meth:`to_arrow_ipc` bytes (what a remote server answered)."""
        table = pa.ipc.open_stream(data).read_all()
        md = table.schema.metadata or {}
        stats = QueryStats(**json.loads(md.get(b"cloudtap.stats", b'{"rows": 0, "elapsed_ms": 0}')))
        meta = json.loads(md.get(b"cloudtap.meta", b"{}"))
        columns = [OutputColumn(**c) for c in json.loads(md.get(b"cloudtap.columns", b"[]"))]
        if not columns:
            columns = [OutputColumn(n, n, "column") for n in table.column_names]
        return cls(table.replace_schema_metadata(None), stats, columns, meta)


def _json_values(column: pa.ChunkedArray) -> list[Any]:
    typ = column.type
    values: list[Any]
    if pa.types.is_timestamp(typ):
        ns = pc.cast(column, pa.timestamp("ns", typ.tz)).cast(pa.int64()).to_pylist()
        return [iso(v) if v is not None else None for v in ns]
    values = column.to_pylist()
    if pa.types.is_floating(typ):
        return [None if v is None or math.isnan(v) or math.isinf(v) else v for v in values]
    if pa.types.is_binary(typ) or pa.types.is_fixed_size_binary(typ):
        return [v.hex() if v is not None else None for v in values]
    return values


class QueryEngine:
    """Runs :class:`Query` objects on a store.

    Args:
        store: the flow store (its ``database`` attribute names the ClickHouse database, if any).
        clock: current time in ns (tests pin it).
        names: the inventory's names (``app.state.names``): filters by name, name columns next to grouped
            ids (see :mod:`cloudtap.server.query.names`). None: name filters are refused, names shown
            only for logical name dimensions (``client_vm``), as ``#<id>``.
    """

    def __init__(
        self, store: FlowStore, clock: Callable[[], int] = time.time_ns, names: NameResolver | None = None
    ) -> None:
        self.store = store
        self.database: str = getattr(store, "database", "cloudtap")
        self.clock = clock
        self.names = names

    def run(self, query: Query) -> QueryResult:
        """Answer ``query``.

        Raises:
            QueryError: unknown names (of dimensions or of inventory entities), bad values, a range too
                wide (even after clamping to the data).
        """
        started = time.perf_counter()
        plan = plan_names(query, label_ids=self.names is not None)
        compiled = self._compile(plan)
        table = self.store.query_arrow(compiled.sql, compiled.parameters)
        return self._shape(compiled, table, started, plan.labels)

    def compile(self, query: Query) -> CompiledQuery:
        """Resolve the range and pick the stored table; the SQL that :meth:`run` would send."""
        return self._compile(plan_names(query, label_ids=self.names is not None))

    def _compile(self, plan: NamePlan) -> CompiledQuery:
        query = plan.query
        now = self.clock()
        t0 = None if _is_all(query.time_from) else parse_instant(query.time_from, now, "time_from")
        if query.time_to is None:
            t1 = None if t0 is None else now
        elif _is_all(query.time_to):
            t1 = None
        else:
            t1 = parse_instant(query.time_to, now, "time_to")
        probe = choose_table(query, NS_PER_S)  # validates names; tells which logical table
        clamp = t0 is None or t1 is None
        table: StoredTable | None = None
        bounds: dict[str, tuple[int, int]] | None = None
        if not clamp:
            if t1 <= t0:  # type: ignore[operator]
                raise QueryError("time_to must be after time_from", "time_to")
            try:
                table = choose_table(query, t1 - t0)  # type: ignore[operator]
            except QueryError as exc:
                if exc.field != "time_from":
                    raise
                clamp = True
        if clamp:
            bounds = self.data_bounds(probe.logical)
            union = (
                (min(b[0] for b in bounds.values()), max(b[1] for b in bounds.values())) if bounds else None
            )
            a, b = _clamp(union, t0, t1, now)
            table = choose_table(query, b - a, set(bounds), whole=t0 is None)
            if (
                table.name in bounds
            ):  # the range of the rows this table holds (rollups end at different times)
                a, b = _clamp(bounds[table.name], t0, t1, now)
            t0, t1 = a, b
        assert t0 is not None and t1 is not None and table is not None
        query = plan.resolve(self.names, t0, t1)
        coarser = coarser_tiers(query, table)
        segments = None
        if coarser:
            if bounds is None:
                bounds = self.data_bounds(table.logical)
            segments = plan_segments(table, coarser, t0, t1, bounds)
        return compile_query(query, t0, t1, self.database, table, segments)

    def data_bounds(self, logical: str) -> dict[str, tuple[int, int]]:
        """Stored table -> [earliest, latest end) of its rows in ns, for the tables of ``logical`` holding any."""
        parts = []
        for t in candidates(logical):
            src = f"{ident(self.database)}.{ident(t.name)}"
            col = ident(t.time_column)
            # plain count/min/max of the partition key column: answered from part metadata, not a scan
            if t.interval is None:  # records: DateTime64(9) times
                lo, hi = f"toUnixTimestamp64Nano(min({col}))", f"toUnixTimestamp64Nano(max({col})) + 1"
            else:
                lo = f"toInt64(toUnixTimestamp(min({col}))) * {NS_PER_S}"
                hi = f"toInt64(toUnixTimestamp(max({col}))) * {NS_PER_S} + {t.width_ns}"
            parts.append(f"SELECT '{t.name}' AS name, count() AS n, {lo} AS lo, {hi} AS hi FROM {src}")
        rows = self.store.query_arrow(" UNION ALL ".join(parts)).to_pylist()
        return {r["name"]: (int(r["lo"]), int(r["hi"])) for r in rows if r["n"]}

    def _shape(
        self, compiled: CompiledQuery, table: pa.Table, started: float, labels: list[Label] | None = None
    ) -> QueryResult:
        table = table.rename_columns([_public(compiled.columns, n) for n in table.column_names])
        if compiled.fill and compiled.step_ns:
            table = _fill(table, compiled)
        truncated = table.num_rows > compiled.limit
        if truncated:
            table = table.slice(0, compiled.limit)
        columns = compiled.columns
        if labels:
            table = add_names(table, labels, self.names, compiled.time_from_ns, compiled.time_to_ns)
            columns = _label_columns(columns, labels)
        stats = QueryStats(rows=table.num_rows, elapsed_ms=round((time.perf_counter() - started) * 1000, 3),
                           truncated=truncated)  # fmt: skip
        t = compiled.table
        meta = {
            "table": t.logical,
            "stored_table": t.name,
            "interval": t.interval,
            "time_from": iso(compiled.time_from_ns),
            "time_to": iso(compiled.time_to_ns),
            "step": format_duration(compiled.step_ns) if compiled.step_ns else None,
            "read": [
                {"stored_table": s.table.name, "time_from": iso(s.time_from_ns), "time_to": iso(s.time_to_ns)}
                for s in compiled.segments
            ]
            if compiled.segments
            else [{"stored_table": t.name, "time_from": iso(compiled.time_from_ns),
                   "time_to": iso(compiled.time_to_ns)}],  # fmt: skip
        }
        return QueryResult(table, stats, columns, meta)


def _label_columns(columns: list[OutputColumn], labels: list[Label]) -> list[OutputColumn]:
    """Output columns with the names added (after their id column) or in its place."""
    out = list(columns)
    for lb in labels:
        at = next((i for i, c in enumerate(out) if c.name == lb.id_column), None)
        if at is None:
            continue
        if lb.replace:
            out[at] = OutputColumn(lb.name, out[at].alias, out[at].role)
        else:
            out.insert(at + 1, OutputColumn(lb.name, lb.name, "name"))
    return out


def _clamp(bounds: tuple[int, int] | None, t0: int | None, t1: int | None, now: int) -> tuple[int, int]:
    """Narrow an open or too wide range to ``bounds`` (the stored rows); empty: one second at its end."""
    end = t1 if t1 is not None else now
    if bounds is None:
        return end - NS_PER_S, end
    lo, hi = bounds
    a = lo if t0 is None else max(t0, lo)
    b = hi if t1 is None else min(t1, hi)
    if b <= a:  # no stored data in the range: an empty answer at its end
        return end - NS_PER_S, end
    return a, b


def _is_all(value: object) -> bool:
    return isinstance(value, str) and value.strip().lower() == ALL


def _public(columns: list[OutputColumn], alias: str) -> str:
    for c in columns:
        if c.alias == alias:
            return c.name
    return alias


def _fill(table: pa.Table, compiled: CompiledQuery) -> pa.Table:
    """Add the empty buckets of an ungrouped series: sums 0, means null."""
    step = compiled.step_ns
    assert step
    first = compiled.time_from_ns // step * step
    n = max(0, -(-(compiled.time_to_ns - first) // step))
    if n == 0 or table.num_rows >= n:
        return table
    seconds = pa.array([(first + i * step) // NS_PER_S for i in range(n)], pa.int64())
    have = (
        pc.cast(table["time"], pa.timestamp("s", "UTC")).cast(pa.int64())
        if table.num_rows
        else pa.array([], pa.int64())
    )
    index = {v: i for i, v in enumerate(have.to_pylist())}
    take = pa.array([index.get(s) for s in seconds.to_pylist()], pa.int64())
    out: dict[str, pa.Array] = {
        "time": seconds.cast(pa.timestamp("s", "UTC")).cast(table.schema.field("time").type)
    }
    for c in compiled.columns:
        if c.role != "metric":
            continue
        col = (
            table[c.name].combine_chunks()
            if table.num_rows
            else pa.array([], table.schema.field(c.name).type)
        )
        values = col.take(take)
        if c.agg in ("sum", "rate", "uniq"):
            values = pc.fill_null(values, pa.scalar(0, col.type))
        out[c.name] = values
    return pa.table(out)

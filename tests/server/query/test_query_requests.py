"""Querying application requests: the ``requests`` rollups and ``request_log`` through the engine and the CLI,
against numpy over the planted rows (counts exact, percentiles within the t-digest's error)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cloudtap.schema.request import REQ_OK, REQ_SERVER_ERROR
from cloudtap.server.query.catalog import describe
from cloudtap.server.query.engine import QueryEngine, QueryResult
from cloudtap.server.query.errors import QueryError
from cloudtap.server.query.model import Query
from cloudtap.server.store.base import BatchKey
from cloudtap.server.store.clickhouse import ClickHouseStore

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "store"))
from request_batches import NS, START_NS, planted_requests, request_batch  # noqa: E402

#: 2 h 30 min of requests from START_NS (10:00 UTC): whole hours and a fringe.
SPAN_S = 9000.0
END_NS = START_NS + int(SPAN_S * NS)
CONTRACT_METRICS = {"requests", "errors", "error_rate", "latency_avg", "latency_p50", "latency_p90", "latency_p99",
                    "latency_max"}  # fmt: skip


@pytest.fixture(scope="module")
def records() -> np.ndarray:
    return planted_requests(30_000, seed=11, span_s=SPAN_S, clients=4, servers=3)


@pytest.fixture(scope="module")
def store(chdb_dsn: str, records: np.ndarray) -> Iterator[ClickHouseStore]:
    """The requests in a database of their own on the test process's chDB data path."""
    s = ClickHouseStore(chdb_dsn, database="query_requests")
    try:
        s.migrate()
        s.insert({"requests": request_batch(records, "hv-1")}, BatchKey("hv-1", 1))
        yield s
    finally:
        s.close()


def run(store: Any, **body: Any) -> QueryResult:
    return QueryEngine(store, clock=lambda: END_NS + 60 * NS).run(Query.model_validate(body))


def _server(records: np.ndarray) -> np.ndarray:
    return np.array([f"10.0.1.{v & 255}" for v in records["server_lo"]])


def _within_digest(lat_ms: np.ndarray, p: float, got: float) -> None:
    rank = float(np.mean(lat_ms <= got) * 100)
    one_row = 100 / lat_ms.size  # a small group's ranks move in steps of one row
    assert abs(rank - p) <= (1.0 if p < 99 else 0.3) + one_row, (p, np.percentile(lat_ms, p), got)


@pytest.mark.parametrize("interval", ["1m", "1h", None])
def test_contract_metrics_per_server_equal_numpy(
    store: Any, records: np.ndarray, interval: str | None
) -> None:
    body: dict[str, Any] = {"table": "requests", "time_from": "all", "group_by": ["server_ip"],
                            "metrics": sorted(CONTRACT_METRICS) + ["answered"], "limit": 100}  # fmt: skip
    if interval:
        body["interval"] = interval
    result = run(store, **body)
    got = {r["server_ip"]: r for r in result.table.to_pylist()}
    servers = _server(records)
    assert set(got) == set(servers)
    for ip, g in got.items():
        rows = records[servers == ip]
        failed = int(np.sum(rows["status"] != REQ_OK))
        lat = rows["latency_us"][rows["latency_us"] >= 0] / 1000
        assert g["requests"] == rows.size and g["errors"] == failed and g["answered"] == lat.size
        assert g["error_rate"] == pytest.approx(failed / rows.size, rel=1e-12)
        assert g["latency_avg"] == pytest.approx(lat.mean(), rel=1e-9)
        assert g["latency_max"] == pytest.approx(lat.max(), rel=1e-12)
        for p in (50, 90, 99):
            _within_digest(lat, p, g[f"latency_p{p}"])
    if interval is None:  # whole hours from request_1h, the fringe from a finer rollup
        read = {part["stored_table"] for part in result.meta["read"]}
        assert "request_1h" in read and read & {"request_1m", "request_1s"}


def test_series_of_server_errors_per_minute(store: Any, records: np.ndarray) -> None:
    t0 = START_NS + 3600 * NS
    result = run(store, table="requests", time_from=t0 // NS, time_to=t0 // NS + 1800,
                 metrics=["server_errors", "requests"], step="5m")  # fmt: skip
    bucket = (records["req_ns"] - t0) // (300 * NS)
    inside = (records["req_ns"] >= t0) & (records["req_ns"] < t0 + 1800 * NS)
    want = [(int(np.sum(inside & (bucket == b) & (records["status"] == REQ_SERVER_ERROR))),
             int(np.sum(inside & (bucket == b)))) for b in range(6)]  # fmt: skip
    assert [(r["server_errors"], r["requests"]) for r in result.table.to_pylist()] == want


def test_metric_names_choose_the_request_tables(store: Any) -> None:
    result = run(store, time_from="all", group_by=["server_port"], metrics=["latency_p99", "error_rate"])
    assert result.meta["table"] == "requests"
    result = run(store, time_from="all", group_by=["resource"], metrics=["latency:p95"])  # records only
    assert result.meta["table"] == "request_log"
    with pytest.raises(QueryError, match="latency.*cannot be aggregated with 'p95'.*request_log"):
        run(store, table="requests", time_from="all", metrics=["latency:p95"])
    with pytest.raises(QueryError, match="interval applies to edges, endpoints and requests"):
        run(store, table="request_log", interval="1m", time_from="all", metrics=["requests"])


def test_slowest_resources_from_request_log(store: Any, records: np.ndarray) -> None:
    result = run(store, table="request_log", time_from="all", group_by=["resource", "status"],
                 filters=[{"dim": "status", "op": "in", "value": ["ok", "server_error"]}],
                 metrics=["requests", "latency_p99", "latency_max"], order_by=["-latency_max"], limit=50)  # fmt: skip
    got = result.table.to_pylist()
    resources = np.char.decode(records["resource"].astype("S160"))
    for row in got:
        code = REQ_OK if row["status"] == "ok" else REQ_SERVER_ERROR
        rows = records[(resources == row["resource"]) & (records["status"] == code)]
        lat = rows["latency_us"] / 1000
        assert row["requests"] == rows.size and row["latency_max"] == pytest.approx(lat.max())
        _within_digest(lat, 99, row["latency_p99"])
    assert [r["latency_max"] for r in got] == sorted((r["latency_max"] for r in got), reverse=True)
    assert len(got) == 8  # 4 paths x 2 outcomes


def test_catalog_has_the_contract_metrics() -> None:
    catalog = describe()
    for table in ("requests", "request_log"):
        spec = catalog[table]
        assert isinstance(spec, dict)
        assert CONTRACT_METRICS <= set(spec["metrics"]), table
        assert spec["metrics"]["latency_p99"]["unit"] == "ms"
        assert {"client_ip", "server_ip", "server_port", "l7_proto", "server_vm_id"} <= set(
            spec["dimensions"]
        )
    assert catalog["requests"]["intervals"] == ["1s", "1m", "1h"]
    assert {"resource", "status", "code", "host"} <= set(catalog["request_log"]["dimensions"])
    assert "latency_us" not in catalog["request_log"]["dimensions"]
    assert "requests" not in catalog["flows"]["dimensions"]  # the flows' request counters are measures

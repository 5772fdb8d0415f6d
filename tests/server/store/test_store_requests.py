"""request_log and its rollups: what is stored, and the rollups against numpy over the inserted rows."""

from __future__ import annotations

import numpy as np
import pytest
from request_batches import NS, START_NS, planted_requests, request_batch

from cloudtap.schema.request import REQ_CLIENT_ERROR, REQ_SERVER_ERROR, REQ_TIMEOUT, REQ_UNANSWERED
from cloudtap.server.store.base import BatchKey
from cloudtap.server.store.clickhouse import ClickHouseStore
from cloudtap.server.store.ddl import ip_text_sql

QUANTILES = (50, 90, 99)


def _expected(records: np.ndarray, bucket_s: int) -> dict[tuple[int, str, str], dict[str, object]]:
    """numpy reference of a rollup: per (bucket, client, server), counts, sums and exact percentiles."""
    out: dict[tuple[int, str, str], dict[str, object]] = {}
    bucket = records["req_ns"] // (bucket_s * NS) * bucket_s
    keys = np.stack([bucket, records["client_lo"].astype(np.int64), records["server_lo"].astype(np.int64)], 1)
    uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
    order = np.argsort(inverse.ravel(), kind="stable")
    groups = np.split(order, np.cumsum(np.bincount(inverse.ravel()))[:-1])
    for key, members in zip(uniq.tolist(), groups, strict=True):
        rows = records[members]
        lat = rows["latency_us"][rows["latency_us"] >= 0]
        ips = tuple(f"10.{(v >> 16) & 255}.{(v >> 8) & 255}.{v & 255}" for v in key[1:])
        out[(key[0], *ips)] = {
            "requests": rows.size,
            "client_errors": int(np.sum(rows["status"] == REQ_CLIENT_ERROR)),
            "server_errors": int(np.sum(rows["status"] == REQ_SERVER_ERROR)),
            "timeouts": int(np.sum((rows["status"] == REQ_TIMEOUT) | (rows["status"] == REQ_UNANSWERED))),
            "answered": lat.size,
            "latency_sum_us": int(lat.sum()),
            "latency_max_us": int(lat.max(initial=0)),
            "lat": lat,
        }
    return out


def _rollup(store: ClickHouseStore, table: str) -> dict[tuple[int, str, str], dict[str, object]]:
    rows = store.query_arrow(
        f"SELECT toUnixTimestamp(time) AS t, {ip_text_sql('client_ip')} AS c, {ip_text_sql('server_ip')} AS s, "
        "sum(requests) AS requests, sum(client_errors) AS client_errors, sum(server_errors) AS server_errors, "
        "sum(timeouts) AS timeouts, sum(answered) AS answered, sum(latency_sum_us) AS latency_sum_us, "
        "max(latency_max_us) AS latency_max_us, quantilesTDigestMerge(0.5, 0.9, 0.99)(latency_digest) AS q "
        f"FROM {table} GROUP BY t, c, s"
    ).to_pylist()
    return {(r.pop("t"), r.pop("c"), r.pop("s")): r for r in rows}


@pytest.mark.parametrize(("table", "bucket_s"), [("request_1s", 1), ("request_1m", 60), ("request_1h", 3600)])
def test_rollups_equal_numpy_over_the_rows(store: ClickHouseStore, table: str, bucket_s: int) -> None:
    records = planted_requests(20_000, seed=7, span_s=2 * 3600.0)
    batch = request_batch(records, "hv-1")
    half = batch.num_rows // 2  # two blocks: the rollup merges states across inserts
    store.insert({"requests": batch.slice(0, half)}, BatchKey("hv-1", 1))
    store.insert({"requests": batch.slice(half)}, BatchKey("hv-1", 2))
    want, got = _expected(records, bucket_s), _rollup(store, table)
    assert set(got) == set(want)
    for key, w in want.items():
        lat = w.pop("lat")
        q = got[key].pop("q")
        assert got[key] == w, key
        if lat.size >= 1000:  # per bucket where there is enough data for the digest's error bound
            _assert_close(lat, q)
    # every bucket's digest merged into one: the table's percentiles against numpy over all rows
    merged = store.query_arrow(
        f"SELECT quantilesTDigestMerge(0.5, 0.9, 0.99)(latency_digest) AS q FROM {table}"
    )
    _assert_close(records["latency_us"][records["latency_us"] >= 0], merged["q"][0].as_py())


def _assert_close(lat: np.ndarray, got: list[float]) -> None:
    """The digest's quantiles are within its rank error of numpy's (1 point at p50/p90, 0.3 at p99)."""
    for p, g in zip(QUANTILES, got, strict=True):
        rank = np.mean(lat <= g) * 100
        assert abs(rank - p) <= (1.0 if p < 99 else 0.3), (p, np.percentile(lat, p), g, rank)
        assert abs(g - np.percentile(lat, p)) <= 0.05 * np.percentile(lat, p)


def test_request_log_keeps_each_request(store: ClickHouseStore) -> None:
    records = planted_requests(500, seed=1)
    store.insert({"requests": request_batch(records, "hv-2", domain="vm-b")}, BatchKey("hv-2", 1))
    rows = store.query_arrow(
        f"SELECT {ip_text_sql('client_ip')} AS c, req_ns, resp_ns, latency_us, status, code, resource, host, "
        "agent_id, vm_domain, toUnixTimestamp(inserted_at) > 0 AS stamped FROM request_log ORDER BY req_ns, c"
    ).to_pylist()
    assert len(rows) == 500
    order = np.lexsort((records["client_lo"], records["req_ns"]))
    first = records[order[0]]
    assert rows[0]["req_ns"] == int(first["req_ns"]) and rows[0]["resp_ns"] == int(first["resp_ns"])
    assert rows[0]["latency_us"] == int(first["latency_us"]) and rows[0]["code"] == int(first["code"])
    assert sorted(r["latency_us"] for r in rows) == sorted(records["latency_us"].tolist())
    assert {r["status"] for r in rows} == {"ok", "client_error", "server_error", "timeout", "unanswered"}
    assert {r["resource"] for r in rows} == {"/api/users", "/api/orders", "/health", "/api/orders/export"}
    assert {(r["host"], r["agent_id"], r["vm_domain"], r["stamped"]) for r in rows} == {
        ("shop.example", "hv-2", "vm-b", 1)
    }
    assert rows[0]["c"].startswith("10.0.0.")


def test_requests_replay_stores_nothing_twice(store: ClickHouseStore) -> None:
    records = planted_requests(300, seed=2, start_ns=START_NS + 3600 * NS)
    batch = {"requests": request_batch(records, "hv-3")}
    assert not store.insert(batch, BatchKey("hv-3", 9)).duplicate
    assert store.insert(batch, BatchKey("hv-3", 9)).duplicate
    counts = store.query_arrow(
        "SELECT (SELECT count() FROM request_log) AS log, (SELECT sum(requests) FROM request_1m) AS m, "
        "(SELECT sum(requests) FROM request_1s) AS s, (SELECT sum(requests) FROM request_1h) AS h"
    ).to_pylist()[0]
    assert counts == {"log": 300, "m": 300, "s": 300, "h": 300}


def test_bad_requests_batch_is_refused_whole(store: ClickHouseStore) -> None:
    batch = request_batch(planted_requests(10), "hv-4").drop_columns(["req_ns"])
    with pytest.raises(ValueError, match="requests: missing required column 'req_ns'"):
        store.insert({"requests": batch}, BatchKey("hv-4", 1))
    assert store.query_arrow("SELECT count() AS n FROM request_log")["n"][0].as_py() == 0

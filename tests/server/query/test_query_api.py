"""/api/v1/query over FastAPI's TestClient: answers, Arrow, status codes and 422s."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from querydata import Dataset

from access_helpers import admin_client, grant
from cloudtap.server.api.app import create_app
from cloudtap.server.settings import ServerSettings

ARROW = "application/vnd.apache.arrow.stream"
ALL = {"time_from": "all"}


@pytest.fixture(scope="module")
def client(store: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    tmp = tmp_path_factory.mktemp("query-api")
    cfg = ServerSettings.model_validate(
        {"auth": {"db_path": str(tmp / "access.sqlite"), "audit_log": str(tmp / "audit.jsonl")}}
    )
    with admin_client(create_app(cfg, store)) as c:
        yield c


def test_queries_need_a_token_with_flows_read(client: TestClient) -> None:
    app = client.app
    anonymous = TestClient(app)  # type: ignore[arg-type]
    assert anonymous.get("/api/v1/query/top", params={"since": "all"}).status_code == 401
    assert anonymous.post("/api/v1/query", json={**ALL, "metrics": ["bytes"]}).status_code == 401
    viewer = grant(app, "viewer")
    assert anonymous.get("/api/v1/query/catalog", headers=viewer).status_code == 200


def test_post_query(client: TestClient, dataset: Dataset) -> None:
    r = client.post(
        "/api/v1/query", json={**ALL, "table": "flows", "metrics": [{"name": "records", "agg": "sum"}]}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["columns"] == ["records"] and body["rows"] == [[dataset.flows.num_rows]]
    assert body["stats"]["rows"] == 1 and body["stats"]["elapsed_ms"] > 0
    assert body["meta"]["stored_table"] == "flow_log"


def test_post_query_as_arrow(client: TestClient) -> None:
    body = {**ALL, "group_by": ["server_port"], "metrics": ["bytes", "rtt"], "order_by": ["server_port asc"]}
    r = client.post("/api/v1/query", json=body, headers={"Accept": ARROW})
    assert r.status_code == 200 and r.headers["content-type"] == ARROW
    table = pa.ipc.open_stream(r.content).read_all()
    assert table.column_names == ["server_port", "bytes", "rtt"]
    assert table["server_port"].to_pylist() == sorted(table["server_port"].to_pylist())
    assert b"cloudtap.stats" in table.schema.metadata
    json_rows = client.post("/api/v1/query", json=body).json()["rows"]
    assert [list(r.values()) for r in table.to_pylist()] == json_rows


def test_top(client: TestClient) -> None:
    r = client.get("/api/v1/query/top", params={"since": "all", "filter": ["server_port=5432", "proto=tcp"],
                                                "limit": 3, "by": "bytes,flows"})  # fmt: skip
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["columns"] == ["client_ip", "server_ip", "server_port", "bytes", "flows"]
    assert len(body["rows"]) == 3 and {row[2] for row in body["rows"]} == {5432}
    assert body["rows"][0][3] >= body["rows"][1][3] >= body["rows"][2][3]
    assert body["stats"]["truncated"]


def test_top_absolute_range_and_percentiles(client: TestClient) -> None:
    r = client.get("/api/v1/query/top", params={"from": "2024-03-01T00:00:00Z", "to": "2024-03-01T01:00:00Z",
                                                "by": "rtt_p95", "group": "server_port"})  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.json()["meta"]["table"] == "flows"
    assert r.json()["meta"]["time_to"] == "2024-03-01T01:00:00Z"


def test_series(client: TestClient) -> None:
    r = client.get("/api/v1/query/series", params={"metric": "bytes_rate", "step": "10m", "since": "all"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["columns"] == ["time", "bytes_rate"] and len(body["rows"]) == 12
    assert body["rows"][1][0] == "2024-03-01T00:10:00Z" and body["meta"]["step"] == "10m"


def test_flows(client: TestClient) -> None:
    r = client.get("/api/v1/query/flows", params={"since": "all", "limit": 4, "filter": "client_ip~10.0.0.0/24",
                                                  "columns": "first,client_ip,bytes_c2s", "order": "-bytes_c2s"})  # fmt: skip
    assert r.status_code == 200, r.text
    rows = r.json()["rows"]
    assert len(rows) == 4 and all(row[1].startswith("10.0.0.") for row in rows)
    assert [row[2] for row in rows] == sorted((row[2] for row in rows), reverse=True)
    assert client.get("/api/v1/query/flows", params={"since": "1h"}).json()["rows"] == []  # data is from 2024


def test_catalog(client: TestClient) -> None:
    body = client.get("/api/v1/query/catalog").json()
    assert set(body) == {"flows", "edges", "endpoints", "requests", "request_log"}
    assert "pXX" in body["flows"]["metrics"]["rtt"]["aggs"]
    assert body["edges"]["metrics"]["rtt"]["aggs"] == ["mean"]
    assert body["edges"]["intervals"] == ["1s", "1m", "1h"]
    assert "client_project_id" in body["edges"]["dimensions"]


@pytest.mark.parametrize(
    ("method", "url", "payload", "where", "allowed_has"),
    [
        ("get", "/api/v1/query/top", {"group": "nope", "since": "all"}, "group_by", "client_ip"),
        ("get", "/api/v1/query/top", {"by": "nope", "since": "all"}, "metrics", "bytes"),
        ("get", "/api/v1/query/top", {"table": "edges", "by": "rtt_p95", "since": "all"}, "metrics", "mean"),
        ("get", "/api/v1/query/series", {"filter": "nope=1", "since": "all"}, "filters", "server_port"),
        ("get", "/api/v1/query/flows", {"columns": "first,nope", "since": "all"}, "columns", "bytes_c2s"),
        ("post", "/api/v1/query", {**ALL, "metrics": ["nope"]}, "metrics", "bytes"),
    ],
)
def test_unknown_names_are_422_with_allowed(client: TestClient, method: str, url: str, payload: dict,
                                            where: str, allowed_has: str) -> None:  # fmt: skip
    r = client.post(url, json=payload) if method == "post" else client.get(url, params=payload)
    assert r.status_code == 422, r.text
    (detail,) = r.json()["detail"]
    assert detail["loc"][-1] == where and allowed_has in detail["ctx"]["allowed"]


@pytest.mark.parametrize(
    ("url", "params"),
    [
        ("/api/v1/query/top", {"limit": 10_001}),
        ("/api/v1/query/top", {"limit": 0}),
        ("/api/v1/query/top", {"since": "yesterday"}),
        ("/api/v1/query/top", {"from": "2024-13-01"}),
        ("/api/v1/query/top", {"filter": "server_port"}),
        ("/api/v1/query/top", {"filter": "server_port=http", "since": "all"}),
        ("/api/v1/query/top", {"filter": "client_ip=1.2.3.4' OR '1'='1", "since": "all"}),
        ("/api/v1/query/top", {"group": "client_ip;DROP TABLE x"}),
        ("/api/v1/query/top", {"table": "packets"}),
        ("/api/v1/query/top", {"interval": "5m"}),
        ("/api/v1/query/series", {"step": "0s"}),
        (
            "/api/v1/query/series",
            {"step": "1s", "from": "2024-03-01T00:00:00Z", "to": "2024-03-01T04:00:00Z"},
        ),
        ("/api/v1/query/series", {"step": "1m", "interval": "1h", "since": "all"}),
        ("/api/v1/query/series", {"top": 0}),
        ("/api/v1/query/flows", {"order": "bytes sideways"}),
        ("/api/v1/query/flows", {"from": "2024-03-01T02:00:00Z", "to": "2024-03-01T01:00:00Z"}),
    ],
)
def test_bad_get_input_is_422(client: TestClient, url: str, params: dict) -> None:
    r = client.get(url, params=params)
    assert r.status_code == 422, (params, r.status_code, r.text)
    assert r.json()["detail"][0]["msg"]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"time_from": "all", "filters": [{"dim": "server_port", "op": "like", "value": 1}]},
        {"time_from": "all", "filters": [{"dim": "server_port", "value": {"$gt": 1}}]},
        {"time_from": "all", "metrics": [{"name": "bytes", "agg": "median"}]},
        {"time_from": "all", "limit": 1_000_000},
        {"time_from": "all", "group_by": ["client_ip"], "metrics": ["bytes"], "order_by": ["nope"]},
        {"time_from": "-1h", "time_to": "-2h", "metrics": ["bytes"]},
        {"time_from": "all", "extra": 1},
    ],
)
def test_bad_body_is_422(client: TestClient, body: dict) -> None:
    assert client.post("/api/v1/query", json=body).status_code == 422


_names = st.sampled_from(["client_ip", "server_port", "proto", "agent_id", "close_type", "ip", "nope", "bytes",
                          "vm_mac", "client_mac", "interface", "rtt"])  # fmt: skip
_values = st.one_of(st.integers(-5, 2**65), st.text(max_size=12), st.sampled_from(["10.0.0.1", "fd00::/8", "tcp"]),
                    st.floats(allow_nan=False, allow_infinity=False))  # fmt: skip
_bodies = st.fixed_dictionaries(
    {"time_from": st.sampled_from(["all", "-1h", "2024-03-01T00:30:00Z", 0])},
    optional={
        "table": st.sampled_from(["flows", "edges", "endpoints"]),
        "interval": st.sampled_from(["1s", "1m", "1h"]),
        "group_by": st.lists(_names, max_size=2, unique=True),
        "metrics": st.lists(st.sampled_from(["bytes", "rtt", "rtt_p99", "flows", "bytes_rate", "uniq(client_ip)",
                                             "packets_in", "records", "nope"]), max_size=3, unique=True),
        "filters": st.lists(st.fixed_dictionaries({"dim": _names, "value": _values, "op": st.sampled_from(
            ["eq", "ne", "in", "not_in", "prefix", "gt", "lt"])}), max_size=2),
        "step": st.sampled_from(["1m", "10m", "1h", "7s"]),
        "limit": st.integers(1, 50),
    },
)  # fmt: skip


@given(body=_bodies)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_fuzzed_queries_answer_200_or_422(client: TestClient, body: dict) -> None:
    r = client.post("/api/v1/query", json=body)
    assert r.status_code in (200, 422), (body, r.status_code, r.text)
    if r.status_code == 200:
        answer = r.json()
        assert all(len(row) == len(answer["columns"]) for row in answer["rows"])

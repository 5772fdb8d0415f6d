"""`cloudtap query requests` and `query top --table requests` on an embedded data directory, against numpy over
the planted request rows."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cloudtap.cli.query_cmd import query_app
from cloudtap.schema.request import REQ_SERVER_ERROR
from cloudtap.server.store.base import BatchKey
from cloudtap.server.store.clickhouse import ClickHouseStore

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server" / "store"))
from request_batches import planted_requests, request_batch  # noqa: E402

SPAN_S = 9000.0


@pytest.fixture(scope="module")
def records() -> np.ndarray:
    return planted_requests(30_000, seed=11, span_s=SPAN_S, clients=4, servers=3)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory, records: np.ndarray) -> Path:
    """A data directory holding the requests (closed again: the CLI opens it itself)."""
    path = tmp_path_factory.mktemp("requests-chdb")
    store = ClickHouseStore(f"chdb://{path}")
    try:
        store.migrate()
        store.insert({"requests": request_batch(records, "hv-1")}, BatchKey("hv-1", 1))
    finally:
        store.close()
    return path


def test_cli_lists_requests_and_ranks_servers(data_dir: Path, records: np.ndarray) -> None:
    runner = CliRunner()
    listed = runner.invoke(query_app, ["requests", "--data", str(data_dir), "--since", "all", "-f",
                                       "status=server_error", "--order", "-latency_us", "-n", "5",
                                       "--format", "json"])  # fmt: skip
    assert listed.exit_code == 0, listed.output
    body = json.loads(listed.stdout)
    errors = records[records["status"] == REQ_SERVER_ERROR]
    slowest = np.sort(errors["latency_us"])[::-1][:5].tolist()
    at = body["columns"].index("latency_us")
    assert [r[at] for r in body["rows"]] == slowest
    assert {r[body["columns"].index("status")] for r in body["rows"]} == {"server_error"}
    table = runner.invoke(
        query_app,
        ["requests", "--data", str(data_dir), "--since", "all", "-n", "3", "--where", "server_port=80"],
    )
    assert table.exit_code == 0, table.output
    assert "request records" in table.stdout and "request_log" in table.stdout and "/api/" in table.stdout
    top = runner.invoke(query_app, ["top", "--data", str(data_dir), "--since", "all", "--table", "requests",
                                    "--by", "latency_p99,requests,error_rate", "--group", "server_ip"])  # fmt: skip
    assert top.exit_code == 0, top.output
    assert "latency_p99 (ms)" in top.stdout and "10.0.1.3" in top.stdout

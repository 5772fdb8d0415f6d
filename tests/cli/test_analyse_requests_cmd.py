"""`cloudtap topology | compare | drill | backtest --metric latency_p99...` against a live server on loopback."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from auth_server import serve, settings_for, token_of
from typer.testing import CliRunner

from access_helpers import grant
from cloudtap.cli.main import app

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server" / "analyse"))
from requestdata import RequestData, build, open_request_store  # noqa: E402

runner = CliRunner()
HOUR = ["--from", "2025-11-21T10:00:00Z", "--to", "2025-11-21T11:00:00Z"]
HALF = ["--from", "2025-11-21T10:30:00Z", "--to", "2025-11-21T11:00:00Z"]


@pytest.fixture(scope="module")
def rdata() -> RequestData:
    return build()


@pytest.fixture(scope="module")
def served(
    chdb_dsn: str, rdata: RequestData, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """(URL, viewer token): the API in a thread on the process's chDB path, with the dataset's names."""
    from cloudtap.server.api.app import create_app

    store = open_request_store(chdb_dsn, rdata, database="analyse_requests_cli")
    api = create_app(settings_for(tmp_path_factory.mktemp("analyse-requests-api")), store)
    try:
        with serve(api) as url:
            api.state.names = rdata.names()  # after start-up
            yield url, token_of(grant(api, "viewer"))
    finally:
        store.close()


@pytest.fixture()
def server(served: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("CLOUDTAP_TOKEN", served[1])
    return served[0]


def cli(*args: str, code: int = 0) -> Any:
    result = runner.invoke(app, list(args), env={"COLUMNS": "200"})
    assert result.exit_code == code, result.output
    return result


def test_request_metrics_json(server: str, rdata: RequestData) -> None:
    topo = json.loads(cli("topology", *HOUR, "--level", "vm", "--metric", "latency_p99", "--server", server,
                          "--json").stdout)  # fmt: skip
    first = topo["edges"][0]
    assert (first["source_name"], first["target_name"], first["server_port"]) == ("shop", "db", 3306)
    assert first["requests"]["requests"] == int(rdata.mask("shop", "db").sum())
    cmp = json.loads(cli("compare", *HALF, "--baseline", "before", "--level", "vm", "--metric", "latency_p99",
                         "--server", server, "--json").stdout)  # fmt: skip
    assert cmp["metric"] == "latency_p99" and cmp["edges"][0]["target_name"] == "db"
    dr = json.loads(
        cli("drill", *HOUR, "--vm", "db", "--metric", "latency_max", "--server", server, "--json").stdout
    )
    assert dr["slowest"][0]["stats"]["latency_max_ms"] == max(
        s["stats"]["latency_max_ms"] for s in dr["slowest"]
    )
    bt = json.loads(cli("backtest", "--vm", "db", "--metric", "latency_p99", "--when", ">15", "--server", server,
                        "--json").stdout)  # fmt: skip
    assert bt["count"] == 1 and bt["signature"]["condition"]["metric"] == "latency_p99"


def test_request_tables_show_ms(server: str) -> None:
    out = cli("topology", *HOUR, "--level", "vm", "--metric", "latency_p99", "--server", server).stdout
    assert "p99 ms" in out and "3306/mysql" in out and "shop" in out
    out = cli("compare", *HALF, "--baseline", "before", "--level", "vm", "--metric", "latency_p99", "-n", "3",
              "--server", server).stdout  # fmt: skip
    assert "servers that changed most" in out and " ms" in out and "10:30–11:00" in out
    out = cli("drill", *HOUR, "--vm", "db", "--server", server).stdout
    assert "slowest (by latency_p99)" in out and "UPDATE stock" in out and "1062" in out and "23000" in out
    out = cli("backtest", "--vm", "db", "--when", "latency_p99>15", "--server", server).stdout
    assert "1 occurrences" in out and " ms" in out


def test_request_metric_errors(server: str) -> None:
    out = cli("topology", *HOUR, "--metric", "latency_p95", "--server", server, code=2).output
    assert "latency_p95" in out and "latency_p99" in out
    out = cli(
        "backtest", "--vm", "db", "--metric", "latency_p99", "--when", "errors>3", "--server", server, code=2
    )
    assert "names its own metric" in out.output

"""`cloudtap topology | compare | drill | backtest | signature` against a live server on loopback."""

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
from analysedata import AnalyseData, DictNames, load, open_store  # noqa: E402

runner = CliRunner()
A = ["--from", "2026-11-20T01:55:00Z", "--to", "2026-11-20T02:10:00Z"]


@pytest.fixture(scope="module")
def adata(tmp_path_factory: pytest.TempPathFactory) -> AnalyseData:
    return load(tmp_path_factory.getbasetemp() / "analyse-data")


@pytest.fixture(scope="module")
def served(
    chdb_dsn: str, adata: AnalyseData, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """(URL, operator token): the API in a thread on the process's chDB path, with the dataset's names."""
    from cloudtap.server.api.app import create_app

    store = open_store(chdb_dsn, adata)
    api = create_app(settings_for(tmp_path_factory.mktemp("analyse-api")), store)
    try:
        with serve(api) as url:
            names = {k: v for k, v in adata.inventory.items() if k != "ip"}
            api.state.names = DictNames(names)  # after start-up
            yield url, token_of(grant(api, "operator"))  # operators may save signatures
    finally:
        store.close()


@pytest.fixture()
def server(served: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> str:
    """The served URL, with the operator's token in ``CLOUDTAP_TOKEN``."""
    monkeypatch.setenv("CLOUDTAP_TOKEN", served[1])
    return served[0]


def cli(*args: str, code: int = 0) -> Any:
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, result.output
    return result


def test_workflow_json(server: str, adata: AnalyseData) -> None:
    topo = json.loads(cli("topology", *A, "--level", "vm", "--server", server, "--json").stdout)
    assert topo["edges"][0]["source_name"] == "db-01"
    cmp = json.loads(cli("compare", *A, "--baseline", "before", "--server", server, "--json").stdout)
    assert cmp["edges"][0]["source_name"] == "db-01" and cmp["edges"][0]["bursts"]
    dr = json.loads(cli("drill", *A, "--vm", "db-01", "--server", server, "--json").stdout)
    assert dr["by_peer"][0]["key"] == "backup-01" and dr["one_way"][0]["to_ip"] == adata.ip_of("backup-01")
    bt = json.loads(cli("backtest", "--vm", "db-01", "--when", "bytes>5M", "--server", server, "--json").stdout)
    assert bt["count"] == 3 and bt["period"]["text"] == "every 60 min ± 1 min"


def test_tables_and_saved_signatures(server: str) -> None:
    out = cli("compare", *A, "--baseline", "before", "-n", "3", "--server", server).stdout
    assert "edges that changed most" in out and "db-01" in out and "02:00–02:03" in out
    out = cli("drill", *A, "--vm", "db-01", "-n", "3", "--server", server).stdout
    assert "one-way pushes" in out and "backup-01" in out
    cli("signature", "save", "cli-backup", "--vm", "db-01", "--port", "873", "--when", "oneway>10", "--server", server)
    assert "cli-backup" in cli("signature", "list", "--server", server).stdout
    out = cli("signature", "run", "cli-backup", "--server", server).stdout
    assert "3 occurrences" in out and "every 60 min ± 1 min" in out and "2026-11-20 03:00:00" in out
    cli("signature", "delete", "cli-backup", "--server", server)
    assert "no saved signature" in cli("signature", "show", "cli-backup", "--server", server, code=2).output


def test_without_a_token_says_to_log_in(served: tuple[str, str]) -> None:
    out = cli("topology", *A, "--server", served[0], code=1).output
    assert "not logged in" in out and f"cloudtap login --server {served[0]}" in out
    out = cli("signature", "list", "--server", served[0], "--token", "ct_bad_token", code=1).output
    assert "not logged in or the token expired" in out


def test_errors(server: str, tmp_path: Path) -> None:
    assert "level" in cli("topology", *A, "--level", "rack", "--server", server, code=2).output
    assert "condition" in cli("backtest", "--when", "bytes", "--server", server, code=2).output
    assert "cannot reach" in cli("topology", *A, "--server", "http://127.0.0.1:9", code=1).output
    assert "no data directory" in cli("topology", *A, "--data", str(tmp_path / "none"), code=2).output

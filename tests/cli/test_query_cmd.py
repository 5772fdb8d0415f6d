"""`cloudtap query` against a local data directory (--data) and a live server (--server)."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from auth_server import PASSWORD, serve, settings_for, token_of
from typer.testing import CliRunner

from access_helpers import grant
from cloudtap.cli.main import app as cli_app
from cloudtap.cli.query_cmd import query_app

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server" / "query"))
from querydata import Dataset, make_dataset, open_test_store  # noqa: E402

runner = CliRunner()


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    return make_dataset(flows=500, deltas=4000)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory, dataset: Dataset) -> Path:
    """A data directory holding the dataset, closed again (the CLI opens it itself)."""
    path = tmp_path_factory.mktemp("cli-chdb")
    open_test_store(str(path), dataset).close()
    return path


def invoke(*args: str) -> Any:
    return runner.invoke(query_app, list(args))


def as_json(result: Any) -> dict[str, Any]:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_top_json_equals_the_data(data_dir: Path, dataset: Dataset) -> None:
    body = as_json(invoke("top", "--data", str(data_dir), "--since", "all", "--group", "server_ip", "-n", "3",
                          "--format", "json"))  # fmt: skip
    e = dataset.edges_1s
    totals: dict[str, int] = {}
    for ip, b1, b2 in zip(e["server_ip"].to_pylist(), e["bytes_c2s"].to_pylist(), e["bytes_s2c"].to_pylist(),
                          strict=True):  # fmt: skip
        totals[ip] = totals.get(ip, 0) + b1 + b2
    want = sorted(totals.items(), key=lambda kv: -kv[1])[:3]
    assert body["columns"] == ["server_ip", "bytes"]
    assert [tuple(r) for r in body["rows"]] == want
    assert body["meta"]["stored_table"] == "edge_1s" and body["stats"]["truncated"]


def test_top_table(data_dir: Path) -> None:
    result = invoke("top", "--data", str(data_dir), "--since", "all", "--by", "bytes,rtt_p95", "--group",
                    "server_port", "-f", "proto=tcp", "-n", "5")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "top server_port by bytes,rtt_p95" in result.stdout
    assert "rtt_p95 (us)" in result.stdout and "MiB" in result.stdout
    assert "flow_log" in result.stdout  # percentiles come from the flow log
    assert all(f" {port} │" in result.stdout for port in (53, 80, 443, 5432, 6379))


def test_series_csv_with_absolute_range(data_dir: Path) -> None:
    result = invoke("series", "--data", str(data_dir), "--from", "2024-03-01T00:00:00Z", "--to",
                    "2024-03-01T01:00:00Z", "--step", "10m", "--metric", "bytes,packets", "--format", "csv")  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows[0] == ["time", "bytes", "packets"]
    assert [r[0] for r in rows[1:]] == [f"2024-03-01T00:{m:02d}:00Z" for m in range(0, 60, 10)]
    assert all(int(r[1]) > 0 for r in rows[1:])


def test_flows_listing(data_dir: Path, dataset: Dataset) -> None:
    body = as_json(invoke("flows", "--data", str(data_dir), "--since", "all", "-n", "4", "-f", "server_port=443",
                          "--format", "json"))  # fmt: skip
    f = dataset.flows
    ports = f["server_port"].to_pylist()
    firsts = sorted(
        (t for t, p in zip(f["first_ns"].to_pylist(), ports, strict=True) if p == 443), reverse=True
    )
    assert len(body["rows"]) == 4
    i = body["columns"].index("server_port")
    assert {r[i] for r in body["rows"]} == {443}
    assert body["rows"][0][0].startswith("2024-03-01T")
    assert len(firsts) > 4 and body["stats"]["truncated"]
    table = invoke("flows", "--data", str(data_dir), "--since", "all", "-n", "3")
    assert table.exit_code == 0 and "bytes c→s/s→c" in table.stdout and "flow records" in table.stdout


def test_run_general_query(data_dir: Path, dataset: Dataset) -> None:
    query = {"table": "endpoints", "time_from": "all", "group_by": ["ip"], "metrics": ["bytes"], "limit": 1}
    body = as_json(invoke("run", json.dumps(query), "--data", str(data_dir), "--format", "json"))
    assert body["columns"] == ["ip", "bytes"] and len(body["rows"]) == 1
    bad = invoke("run", "{not json", "--data", str(data_dir))
    assert bad.exit_code == 2 and "not a valid query" in bad.output


def test_user_errors_exit_2_with_the_allowed_names(data_dir: Path, tmp_path: Path) -> None:
    unknown = invoke("top", "--data", str(data_dir), "--since", "all", "--group", "nope")
    assert unknown.exit_code == 2
    assert "unknown dimension 'nope'" in unknown.output and "client_ip" in unknown.output
    bad_filter = invoke("top", "--data", str(data_dir), "--since", "all", "-f", "server_port")
    assert bad_filter.exit_code == 2 and "dim OP value" in bad_filter.output
    assert invoke("top", "--data", str(tmp_path / "missing")).exit_code == 2
    empty = invoke("top", "--data", str(tmp_path))
    assert empty.exit_code == 2 and "no cloudtap store" in empty.output
    assert invoke("top", "--data", str(data_dir), "--format", "xml").exit_code == 2
    both = invoke("top", "--data", str(data_dir), "--server", "http://127.0.0.1:1")
    assert both.exit_code == 2 and "not both" in both.output


def test_catalog_command() -> None:
    result = invoke("catalog", "edges")
    assert result.exit_code == 0
    assert (
        "rtt" in result.stdout and "server_port" in result.stdout and "flows (records)" not in result.stdout
    )


@pytest.fixture()
def served(data_dir: Path, tmp_path: Path) -> Iterator[tuple[str, Any]]:
    """(URL, app): the API on loopback, in a thread, over the same data directory; access control on."""
    from cloudtap.server.api.app import create_app

    store = open_test_store(str(data_dir))
    app = create_app(settings_for(tmp_path), store)
    try:
        with serve(app) as url:
            yield url, app
    finally:
        store.close()


@pytest.fixture()
def server_url(served: tuple[str, Any], monkeypatch: pytest.MonkeyPatch) -> str:
    """The served URL, with a viewer's token in ``CLOUDTAP_TOKEN``."""
    url, app = served
    monkeypatch.setenv("CLOUDTAP_TOKEN", token_of(grant(app, "viewer")))
    return url


def test_through_the_server(server_url: str, data_dir: Path) -> None:
    remote = as_json(
        invoke("top", "--server", server_url, "--since", "all", "--group", "client_ip", "--format", "json")
    )
    local = as_json(
        invoke("top", "--data", str(data_dir), "--since", "all", "--group", "client_ip", "--format", "json")
    )
    assert remote["rows"] == local["rows"] and remote["meta"] == local["meta"]
    unknown = invoke("series", "--server", server_url, "--since", "all", "--metric", "nope")
    assert unknown.exit_code == 2 and "unknown metric 'nope'" in unknown.output and "bytes" in unknown.output
    table = invoke(
        "series", "--server", server_url, "--since", "all", "--step", "1h", "--metric", "bytes_rate"
    )
    assert table.exit_code == 0 and "KiB/s" in table.stdout


def test_the_server_needs_a_login(served: tuple[str, Any]) -> None:
    url, app = served
    refused = invoke("top", "--server", url, "--since", "all")
    assert (
        refused.exit_code == 1
        and f"not logged in to {url}: run `cloudtap login --server {url}`" in refused.output
    )
    grant(app, "viewer", name="vic")
    login = CliRunner().invoke(cli_app, ["login", "--server", url, "--user", "vic"], input=f"{PASSWORD}\n")
    assert login.exit_code == 0, login.output
    saved = invoke(
        "top", "--since", "all", "--group", "server_port", "--format", "json"
    )  # server and token saved
    assert saved.exit_code == 0, saved.output
    assert json.loads(saved.stdout)["columns"] == ["server_port", "bytes"]


def test_unreachable_server() -> None:
    result = invoke("top", "--server", "http://127.0.0.1:1")
    assert result.exit_code == 1 and "cannot reach" in result.output


def test_locked_data_directory_is_explained(data_dir: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom cloudtap.server.store.clickhouse import ClickHouseStore\n"
         f"s = ClickHouseStore('chdb://{data_dir}')\nprint('ready', flush=True)\nsys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        result = invoke("top", "--data", str(data_dir), "--since", "all")
        assert result.exit_code == 1
        assert "in use by another process" in result.output and "--server" in result.output
    finally:
        holder.kill()
        holder.wait(10)

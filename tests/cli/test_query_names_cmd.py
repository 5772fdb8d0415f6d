"""`cloudtap query --project/--vm/--host/--subnet` and `--group client_vm,server_vm`, local and remote."""

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
from cloudtap.cli.query_cmd import query_app

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server" / "query"))
from querydata import RENAMED_AT, T0, VMS, Dataset, make_dataset, open_named_store  # noqa: E402

runner = CliRunner()
FIRST_HOUR = ("--from", "2024-03-01T00:00:00Z", "--to", "2024-03-01T01:00:00Z", "--interval", "1s")
IP = {name: ip for name, (_, _, ip) in VMS.items()}


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    return make_dataset(flows=400, deltas=3000)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory, dataset: Dataset) -> Path:
    """A data directory with the inventory and the dataset tagged by it, closed again."""
    path = tmp_path_factory.mktemp("cli-names")
    store, _ = open_named_store(str(path), dataset)
    store.close()
    return path


def invoke(*args: str) -> Any:
    return runner.invoke(query_app, list(args))


def as_json(result: Any) -> dict[str, Any]:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _edge_bytes(data: Dataset, t0: int, t1: int, keep: Any) -> int:
    e = data.edges_1s.to_pydict()
    return sum(e["bytes_c2s"][i] + e["bytes_s2c"][i] for i in range(len(e["time_ns"]))
               if t0 <= e["time_ns"][i] < t1 and keep(e["client_ip"][i], e["server_ip"][i]))  # fmt: skip


def test_top_by_vm_with_names(data_dir: Path, dataset: Dataset) -> None:
    body = as_json(invoke("top", "--data", str(data_dir), *FIRST_HOUR, "--vm", "db-01", "--group",
                          "client_vm,server_vm", "-n", "100", "--format", "json"))  # fmt: skip
    assert body["columns"] == ["client_vm", "server_vm", "bytes"]
    assert {r[1] for r in body["rows"]} == {"db-01"} and "app-01" in {r[0] for r in body["rows"]}
    want = _edge_bytes(dataset, T0, RENAMED_AT, lambda c, s: IP["db-01"] in (c, s))
    assert sum(r[2] for r in body["rows"]) == want > 0


def test_project_host_and_subnet_options(data_dir: Path, dataset: Dataset) -> None:
    body = as_json(invoke("top", "--data", str(data_dir), *FIRST_HOUR, "--project", "payments", "--host", "hv-01",
                          "--group", "server_ip", "-n", "100", "--format", "json"))  # fmt: skip
    # both filters apply (AND), each on either side
    pay = {ip for project, _, ip in VMS.values() if project == "pay"}
    hv1 = {ip for _, host, ip in VMS.values() if host == "hv-01"}
    want = _edge_bytes(dataset, T0, RENAMED_AT,
                       lambda c, s: (c in pay or s in pay) and (c in hv1 or s in hv1))  # fmt: skip
    assert sum(r[1] for r in body["rows"]) == want > 0
    series = as_json(invoke("series", "--data", str(data_dir), "--since", "all", "--subnet", "backend", "--step",
                            "1h", "--format", "json"))  # fmt: skip
    assert len(series["rows"]) == 2 and all(r[1] > 0 for r in series["rows"])
    flows = as_json(invoke("flows", "--data", str(data_dir), "--since", "all", "--vm", "web-*", "--columns",
                           "client_ip,server_ip,server_vm", "-n", "5", "--format", "json"))  # fmt: skip
    assert flows["columns"] == ["client_ip", "server_ip", "server_vm"]
    assert all(IP["web-01"] in (r[0], r[1]) for r in flows["rows"]) and len(flows["rows"]) == 5


def test_table_shows_names_and_the_rename(data_dir: Path) -> None:
    later = ("--from", "2024-03-01T01:00:00Z", "--to", "2024-03-01T02:00:00Z", "--interval", "1s")
    result = invoke("top", "--data", str(data_dir), *later, "--vm", "ledger-01", "--group", "server_vm,client_vm")
    assert result.exit_code == 0, result.output
    assert "ledger-01" in result.stdout and "db-01" not in result.stdout


def test_unknown_name_exits_2_naming_it(data_dir: Path) -> None:
    result = invoke("top", "--data", str(data_dir), "--since", "all", "--project", "nope")
    assert result.exit_code == 2 and "no project named 'nope'" in result.output
    gone = invoke("top", "--data", str(data_dir), *FIRST_HOUR, "--vm", "ledger-01")
    assert gone.exit_code == 2 and "ledger-01" in gone.output  # renamed only after this window


@pytest.fixture()
def server_url(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The API on loopback over the same data directory (its inventory loads the stored history); a viewer's
    token in ``CLOUDTAP_TOKEN``."""
    from cloudtap.server.api.app import create_app
    from cloudtap.server.store.clickhouse import open_store

    store = open_store(f"chdb://{data_dir}", "cloudtap")
    app = create_app(settings_for(tmp_path, inventory={"learn_from_agents": False}), store)
    try:
        with serve(app) as url:
            monkeypatch.setenv("CLOUDTAP_TOKEN", token_of(grant(app, "viewer")))
            yield url
    finally:
        store.close()


def test_names_through_the_server(server_url: str, data_dir: Path) -> None:
    args = ("top", *FIRST_HOUR, "--vm", "db-*", "--group", "client_vm,server_vm", "-n", "50", "--format", "json")
    remote = as_json(invoke(*args, "--server", server_url))
    assert remote["columns"] == ["client_vm", "server_vm", "bytes"]
    assert {r[1] for r in remote["rows"]} >= {"db-01", "db-02"}
    unknown = invoke("top", "--server", server_url, "--since", "all", "--vm", "db-99")
    assert unknown.exit_code == 2 and "db-99" in unknown.output

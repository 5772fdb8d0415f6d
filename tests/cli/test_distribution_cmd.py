"""`cloudtap fleet destination|distribution ...` and `fleet policy add --dry-run` against a real server holding
an imported synthetic capture tagged by its inventory."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from auth_server import serve, settings_for, token_of
from typer.testing import CliRunner

from access_helpers import grant
from cloudtap.cli.main import app as cli_app

runner = CliRunner()


@pytest.fixture()
def served(open_store: Callable[..., Any], tmp_path: Path) -> Iterator[tuple[str, Any, Any]]:
    from cloudtap.server.api.app import create_app
    from cloudtap.server.importer import import_tables
    from cloudtap.synth.inventory import write_static_inventory
    from cloudtap.synth.scenario import resolve_scenario, with_overrides
    from cloudtap.synth.writer import write_pcap

    scn = with_overrides(resolve_scenario("small-cloud"), duration="5s")
    pcap = write_pcap(scn, tmp_path / "s.pcap").path
    inventory = write_static_inventory(scn, tmp_path / "inv.yaml")
    app = create_app(
        settings_for(tmp_path / "server", inventory={"static_file": str(inventory)}), open_store()
    )
    with serve(app) as url:
        imported = import_tables([pcap])
        app.state.ingestor.ingest_tables(imported.tables, imported.key)
        yield url, app, scn


def cli(*args: str, code: int = 0) -> Any:
    result = runner.invoke(cli_app, list(args))
    assert result.exit_code == code, result.output
    return result


def test_destinations_and_distribution_policies_from_the_command_line(served: tuple[str, Any, Any]) -> None:
    url, app, _ = served
    op = ["--server", url, "--token", token_of(grant(app, "operator"))]
    viewer = ["--server", url, "--token", token_of(grant(app, "viewer"))]
    denied = cli("fleet", "destination", "add", "ids-1", "--address", "192.0.2.10", *viewer, code=1).output
    assert "config:write" in denied
    cli(
        "fleet",
        "destination",
        "add",
        "ids-1",
        "--address",
        "192.0.2.10",
        "--vni",
        "7",
        "--max-bps",
        "5000000",
        *op,
    )
    listed = cli("fleet", "destination", "list", *viewer).output
    assert "ids-1" in listed and "vni 7 port 4789" in listed and "5.0 Mbit/s" in listed
    missing = cli("fleet", "distribution", "add", "pci", "--vm", "db-*", "-d", "nowhere", *op, code=1).output
    assert "nowhere" in missing
    out = cli(
        "fleet", "distribution", "add", "pci", "--vm", "db-*", "-d", "ids-1", "--truncate", "128", *op
    ).output
    assert "distribution policy pci saved" in out
    rows = json.loads(cli("fleet", "distribution", "list", "--json", *viewer).stdout)
    assert [(p["name"], p["truncate"], p["destinations"]) for p in rows] == [("pci", 128, ["ids-1"])]
    shown = cli("fleet", "distribution", "show", "pci", *viewer).output
    assert "truncate: 128" in shown and "compiled on 0 agents" in shown  # no agent registered
    assert "used by" in cli("fleet", "destination", "list", *viewer).output
    busy = cli("fleet", "destination", "remove", "ids-1", *op, code=1).output
    assert "used by distribution policies pci" in busy
    cli("fleet", "distribution", "remove", "pci", *op)
    cli("fleet", "destination", "remove", "ids-1", *op)
    assert json.loads(cli("fleet", "destination", "list", "--json", *viewer).stdout) == []


def test_policy_add_dry_run_prints_figures_and_applies_nothing(served: tuple[str, Any, Any]) -> None:
    url, app, scn = served
    op = ["--server", url, "--token", token_of(grant(app, "operator"))]
    start = str(int(scn.start.timestamp()))
    window = ["--from", start, "--to", str(int(start) + 120)]
    out = cli("fleet", "policy", "add", "dbs", "--vm", "db-*", "--dry-run", *window, *op).output
    assert "dry-run of capture policy 'dbs'" in out and "2 VMs selected" in out and "nothing applied" in out
    answer = json.loads(
        cli("fleet", "policy", "add", "dbs", "--vm", "db-*", "--dry-run", "--json", *window, *op).stdout
    )
    assert answer["totals"]["packets"] > 0 and f"{answer['totals']['packets']:,}" in out
    stored = cli("fleet", "policy", "add", "dbs", "--vm", "db-*", "--store-packets", "--snaplen", "96", "--dry-run",
                 *window, *op).output  # fmt: skip
    assert "dry-run of storage policy" in stored and "packets stored" in stored
    assert app.state.controller.policies.all() == []
    dist = cli("fleet", "distribution", "add", "dbs", "--vm", "db-*", "-d", "ids-9", "--truncate", "64", "--dry-run",
               "--max-uplink-bps", "1000", *window, *op).output  # fmt: skip
    assert "per destination" in dist and "ids-9 (not defined)" in dist and "edge_1s" in dist
    assert app.state.controller.distribution.policies() == []
    # the old form still lists, and `add` without --dry-run writes
    assert "dbs saved" in cli("fleet", "policy", "add", "dbs", "--vm", "db-*", *op).output
    assert "policies" in cli("fleet", "policy", *op).output
    assert [p.name for p in app.state.controller.policies.all()] == ["dbs"]
    top = json.loads(cli("fleet", "top", "--by", "forwarded_bps", "--json", *op).stdout)
    assert top == []


def test_fleet_top_by_forwarded_bps(served: tuple[str, Any, Any]) -> None:
    from cloudtap.server.controller.status import HeartbeatReport

    url, app, _ = served
    ctl = app.state.controller
    for host, fuse in (("hv-01", False), ("hv-02", True)):
        agent_id = ctl.register(None, {"name": f"agent-{host}", "hostname": host, "machine_id": f"m-{host}"})[
            "agent_id"
        ]
        rec = ctl.registry.get(agent_id)
        for i in range(3):
            step = 10**6 if host == "hv-01" else 10**3
            ctl.heartbeat(
                rec, HeartbeatReport(forwarded_bytes=i * step, forward_drops=i, broker_fuse_open=fuse)
            )
    viewer = ["--server", url, "--token", token_of(grant(app, "viewer"))]
    out = cli("fleet", "top", "--by", "forwarded_bps", "--window", "1h", *viewer).output
    assert "top agents by forwarded_bps" in out and "open" in out and "forward drops" in out
    assert out.index("agent-hv-01") < out.index("agent-hv-02")

"""`cloudtap fleet` through the shared client: the saved login, missing logins and permissions."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from auth_server import serve, settings_for, token_of
from typer.testing import CliRunner

from access_helpers import PASSWORD, grant
from cloudtap.cli.main import app as cli_app

runner = CliRunner()


@pytest.fixture()
def served(open_store: Callable[..., Any], tmp_path: Path) -> Iterator[tuple[str, Any]]:
    from cloudtap.server.api.app import create_app

    app = create_app(settings_for(tmp_path / "server"), open_store())
    with serve(app) as url:
        yield url, app


def cli(*args: str, code: int = 0, input: str | None = None) -> Any:
    result = runner.invoke(cli_app, list(args), input=input)
    assert result.exit_code == code, result.output
    return result


def test_fleet_with_and_without_a_login(served: tuple[str, Any]) -> None:
    url, app = served
    out = cli("fleet", "agents", "--server", url, code=1).output
    assert f"not logged in to {url}: run `cloudtap login --server {url}`" in out
    grant(app, "viewer", name="vera")
    cli("login", "--server", url, "--user", "vera", input=f"{PASSWORD}\n")
    assert "0 agents" in cli("fleet", "agents").output  # the saved server and token
    assert json.loads(cli("fleet", "stale", "--json").stdout) == []
    assert json.loads(cli("fleet", "top", "--by", "cpu", "--json").stdout) == []
    denied = cli("fleet", "capture", "stop", "--group", "default", code=1).output
    assert "permission denied" in denied and "fleet:control" in denied
    operator = token_of(grant(app, "operator"))
    assert "policies" in cli("fleet", "policy", "--token", operator).output


def test_fleet_why_names_the_first_broken_link_and_what_to_do(served: tuple[str, Any]) -> None:
    import time

    from cloudtap.inventory.model import VM, Host, Project, Snapshot
    from cloudtap.server.controller.status import HeartbeatReport

    url, app = served
    ctl = app.state.controller
    ctl.inventory = lambda: Snapshot(source="test", taken_at=1, projects=[Project("p", "shop")],
                                     hosts=[Host("hv-a", "hv-a")], vms=[VM("v1", "web-01", "p", "hv-a", "ACTIVE")])  # fmt: skip
    agent = ctl.register(None, {"name": "agent-hv-a", "hostname": "hv-a", "machine_id": "m-a"})["agent_id"]
    now = time.time()
    ctl.heartbeats.record(agent, now - 20, HeartbeatReport(capturing=True))
    ctl.heartbeats.record(agent, now - 1, HeartbeatReport(capturing=True, pps_limit_drops=4000))
    ctl.registry.seen(agent, now)
    token = token_of(grant(app, "viewer"))
    out = cli("fleet", "why", "--vm", "web-01", "--server", url, "--token", token, code=3).output
    lines = out.splitlines()
    assert any("BROKEN" in line and "limits" in line for line in lines), out
    assert "broken link: the pps cap (limits.max_pps) of agent agent-hv-a dropped all 4000 packets" in " ".join(lines)
    assert "what to do:" in out and "raise limits.max_pps" in " ".join(lines)
    answer = json.loads(cli("fleet", "why", "--vm", "web-01", "--server", url, "--token", token, "--json",
                            code=3).stdout)  # fmt: skip
    assert answer["broken"] == "limits" and answer["fix"] == answer["steps"][-1]["fix"]

"""`cloudtap audit`: failed logins and user changes, filtered, as a table and as JSON."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from auth_server import ADMIN, PASSWORD, add_admin, serve, settings_for, token_of
from typer.testing import CliRunner

from access_helpers import grant
from cloudtap.cli.audit_cmd import since_param, summary
from cloudtap.cli.main import app as cli_app

runner = CliRunner()


@pytest.fixture()
def served(open_store: Callable[..., Any], tmp_path: Path) -> Iterator[tuple[str, Any]]:
    from cloudtap.server.api.app import create_app

    app = create_app(settings_for(tmp_path / "server"), open_store())
    add_admin(app)
    with serve(app) as url:
        yield url, app


def cli(*args: str, code: int = 0, input: str | None = None) -> Any:
    result = runner.invoke(cli_app, list(args), input=input)
    assert result.exit_code == code, result.output
    return result


def test_audit_shows_the_failed_login_and_the_user_change(served: tuple[str, Any]) -> None:
    url, app = served
    cli("login", "--server", url, "--user", "mallory", input="guessing-a-password\n", code=1)
    cli("login", "--server", url, "--user", ADMIN, input=f"{PASSWORD}\n")
    cli(
        "user",
        "add",
        "dave",
        "--role",
        "viewer",
        "--project",
        "shop",
        input="dave's password!\ndave's password!\n",
    )
    table = cli("audit", "--since", "1h").output
    assert "auth.login" in table and "refused" in table and "user=mallory" in table
    assert "user.add" in table and "user=dave" in table and ADMIN in table
    records = json.loads(cli("audit", "--action", "user.", "--json").stdout)
    assert [r["action"] for r in records] == ["user.add"] and records[0]["actor"] == ADMIN
    assert records[0]["bindings"] == [{"role": "viewer", "projects": ["shop"]}]
    refused = json.loads(cli("audit", "--action", "auth.login", "--actor", "mallory", "--json").stdout)
    assert refused == [] and "mallory" in json.dumps(
        json.loads(cli("audit", "--action", "auth.", "--json").stdout)
    )
    issued = json.loads(cli("audit", "--action", "token.issue", "--json", "-n", "1").stdout)
    assert len(issued) == 1 and issued[0]["actor"] == ADMIN and "token" not in issued[0]
    assert cli("audit", "--since", "-1s", "--action", "nothing.").output.count("audit: 0 record(s)") == 1
    # only admins read it
    viewer = token_of(grant(app, "viewer"))
    denied = cli("audit", "--token", viewer, code=1).output
    assert "permission denied" in denied and "audit:read" in denied


def test_since_and_summary() -> None:
    assert since_param("1h") == "-1h" and since_param("90min") == "-90min" and since_param("-1d") == "-1d"
    assert since_param("2026-01-01T00:00:00Z") == "2026-01-01T00:00:00Z" and since_param(None) is None
    record = {"time": "t", "time_ns": 1, "action": "pcap.retrieve", "actor": "a", "outcome": "ok",
              "vm": "db-01", "agents": None, "filter": "", "targets": [{"agent": "hv-1", "interfaces": ["x"]}]}  # fmt: skip
    assert summary(record) == 'vm=db-01 targets={"agent":"hv-1","interfaces":["x"]}'

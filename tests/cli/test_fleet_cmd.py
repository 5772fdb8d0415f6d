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

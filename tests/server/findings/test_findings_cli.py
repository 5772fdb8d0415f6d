"""`cloudtap findings list | show | ack | mute | unmute | run | rules | rule-set | rule-delete` against a live server."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from findingsdata import names_of
from findingsrun import Ran
from typer.testing import CliRunner

from access_helpers import grant
from cloudtap.cli.main import app

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "cli"))
from auth_server import serve, settings_for, token_of  # noqa: E402

runner = CliRunner()


@pytest.fixture(scope="module")
def server(planted: Ran, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any]]:
    from cloudtap.server.api.app import create_app

    api = create_app(
        settings_for(tmp_path_factory.mktemp("findings-cli"), findings={"enabled": False}), planted.store
    )
    with serve(api) as url:
        api.state.names = names_of(planted.data)
        yield url, api


def cli(*args: str, code: int = 0) -> Any:
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, result.output
    return result


def test_list_show_ack_mute(server: tuple[str, Any], monkeypatch: pytest.MonkeyPatch, planted: Ran) -> None:
    url, api = server
    monkeypatch.setenv("CLOUDTAP_TOKEN", token_of(grant(api, "operator", name="cli-op")))
    listed = json.loads(cli("findings", "list", "--server", url, "--kind", "scan", "--json").stdout)
    (scan,) = listed["findings"]
    table = cli("findings", "list", "--server", url, "--severity", "warning", "-n", "100").stdout
    assert "scan" in table and "lb_imbalance" in table and "new_edge" not in table
    shown = cli("findings", "show", scan["id"], "--server", url).stdout
    assert "bastion-01" in shown and "reproduce: cloudtap drill" in shown
    cli("findings", "ack", scan["id"], "--server", url, "--reason", "pen test")
    cli("findings", "mute", scan["id"], "--server", url, "-m", "pen test week", "--until", "+2h")
    again = json.loads(cli("findings", "show", scan["id"], "--server", url, "--json").stdout)
    assert again["state"] == "muted" and [a["user"] for a in again["actions"]] == ["cli-op", "cli-op"]
    cli("findings", "unmute", scan["id"], "--server", url)
    cli("findings", "show", "nope", "--server", url, code=2)  # 404: named, exit 2
    cli("findings", "list", "--server", url, "--kind", "nope", code=2)


def test_run_and_rules(server: tuple[str, Any], monkeypatch: pytest.MonkeyPatch, planted: Ran) -> None:
    url, api = server
    monkeypatch.setenv("CLOUDTAP_TOKEN", token_of(grant(api, "operator")))
    t0 = planted.data.start_s
    out = json.loads(
        cli("findings", "run", "--from", str(t0), "--to", str(t0 + 180), "--server", url, "--json").stdout
    )
    assert out["minutes"] == 3
    cli("findings", "rule-set", "no-dns-from-shop", "--a-project", "shop", "--b-cidr", "10.10.3.0/24", "--one-way",
        "--server", url)  # fmt: skip
    rules = cli("findings", "rules", "--server", url).stdout
    assert "no-dns-from-shop" in rules and "shop -> 10.10.3.0/24" in rules
    cli("findings", "rule-delete", "no-dns-from-shop", "--server", url)
    assert "no-dns-from-shop" not in cli("findings", "rules", "--server", url).stdout
    monkeypatch.setenv("CLOUDTAP_TOKEN", token_of(grant(api, "viewer")))
    cli("findings", "run", "--from", str(t0), "--to", str(t0 + 60), "--server", url, code=1)  # 403

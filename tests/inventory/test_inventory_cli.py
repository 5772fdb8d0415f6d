"""`cloudtap inventory` against a served app (a real socket, access control on, the CLI's token)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from access_helpers import grant
from cloudtap.cli.main import app

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cli"))
from auth_server import serve, settings_for, token_of  # noqa: E402


class _Store:  # no ClickHouse: the inventory stays in memory
    pass


def test_list_history_sync_status(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cloudtap.server.api.app import create_app
    from cloudtap.synth.inventory import write_static_inventory
    from cloudtap.synth.scenario import resolve_scenario

    inv = write_static_inventory(resolve_scenario("small-cloud"), tmp_path / "inv.yaml")
    api = create_app(settings_for(tmp_path, inventory={"static_file": str(inv)}), _Store())  # type: ignore[arg-type]
    monkeypatch.setenv("CLOUDTAP_CREDENTIALS", str(tmp_path / "credentials.yaml"))
    monkeypatch.delenv("CLOUDTAP_TOKEN", raising=False)
    run = CliRunner().invoke
    with serve(api) as url:
        monkeypatch.setenv("CLOUDTAP_SERVER", url)
        refused = run(app, ["inventory", "status"])
        assert refused.exit_code == 1 and f"run `cloudtap login --server {url}`" in refused.output
        viewer = token_of(grant(api, "viewer"))
        denied = run(app, ["inventory", "sync", "--token", viewer])
        assert (
            denied.exit_code == 1
            and "permission denied" in denied.output
            and "inventory:sync" in denied.output
        )
        monkeypatch.setenv("CLOUDTAP_TOKEN", token_of(grant(api, "admin")))
        synced = run(app, ["inventory", "sync"])
        assert synced.exit_code == 0 and re.search(
            r"static: \d+ change\(s\)", synced.output
        )  # also synced at start
        listed = run(app, ["inventory", "list", "vm", "--name", "db-*"])
        assert listed.exit_code == 0 and "db-01" in listed.output and "shop/db-02" in listed.output
        assert "2 vm(s)" in listed.output
        hist = run(app, ["inventory", "history", "vm", "shop/db-01"])
        assert hist.exit_code == 0 and "now" in hist.output and "static" in hist.output
        status = run(app, ["inventory", "status"])
        assert status.exit_code == 0 and "30 vm" in status.output
        missing = run(app, ["inventory", "list", "planet"])
        assert missing.exit_code == 1 and "unknown inventory kind 'planet'" in missing.output

"""`cloudtap inventory` against a served app (HTTP calls answered by FastAPI's TestClient)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from cloudtap.cli import inventory_cmd
from cloudtap.cli.main import app
from cloudtap.server.settings import ServerSettings


class _Store:  # no ClickHouse: the inventory stays in memory
    pass


def test_list_history_sync_status(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cloudtap.server.api.app import create_app
    from cloudtap.synth.inventory import write_static_inventory
    from cloudtap.synth.scenario import resolve_scenario

    inv = write_static_inventory(resolve_scenario("small-cloud"), tmp_path / "inv.yaml")
    settings = ServerSettings.model_validate({"inventory": {"static_file": str(inv)}})
    client = TestClient(create_app(settings, _Store()))  # type: ignore[arg-type]

    def call(server: str | None, method: str, path: str, params: dict[str, Any] | None = None) -> Any:
        params = {k: v for k, v in (params or {}).items() if v is not None}
        resp = client.request(method, f"/api/v1/inventory/{path}", params=params)
        if resp.status_code >= 400:
            inventory_cmd._fail(f"server answered {resp.status_code}: {resp.json()['detail']}")
        return resp.json()

    monkeypatch.setattr(inventory_cmd, "_call", call)
    run = CliRunner().invoke
    synced = run(app, ["inventory", "sync"])
    assert synced.exit_code == 0 and "static: 74 change(s)" in synced.output
    listed = run(app, ["inventory", "list", "vm", "--name", "db-*"])
    assert listed.exit_code == 0 and "db-01" in listed.output and "shop/db-02" in listed.output
    assert "2 vm(s)" in listed.output
    hist = run(app, ["inventory", "history", "vm", "shop/db-01"])
    assert hist.exit_code == 0 and "now" in hist.output and "static" in hist.output
    status = run(app, ["inventory", "status"])
    assert status.exit_code == 0 and "30 vm" in status.output
    missing = run(app, ["inventory", "list", "planet"])
    assert missing.exit_code == 1 and "unknown inventory kind 'planet'" in missing.output

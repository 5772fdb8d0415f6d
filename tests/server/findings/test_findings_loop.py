"""The scheduled loop: started by the app when ``findings.enabled``, it processes the newest complete minutes."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from cloudtap.server.api.app import create_app
from cloudtap.server.settings import ServerSettings


def _settings(tmp: Path, **findings: Any) -> ServerSettings:
    return ServerSettings.model_validate({
        "inventory": {"enabled": False}, "controller": {"db_path": str(tmp / "ctl.sqlite")},
        "auth": {"db_path": str(tmp / "access.sqlite"), "audit_log": str(tmp / "audit.jsonl")},
        "findings": findings,
    })  # fmt: skip


def test_the_loop_runs_on_schedule(fresh_planted: Any, tmp_path: Path) -> None:
    app = create_app(_settings(tmp_path, interval_s=0.2, learn_minutes=10), fresh_planted)
    with TestClient(app):
        loop = app.state.findings_loop
        deadline = time.monotonic() + 120
        while app.state.findings_engine.cycles < 30 and time.monotonic() < deadline:
            time.sleep(0.2)
        engine = app.state.findings_engine
        assert engine.cycles == 30 and loop.failures == 0  # the capture's 30 minutes, each once
        assert {f.kind for f in engine.findings.find(limit=1000)} >= {"scan", "burst", "lb_imbalance"}
    assert not loop._thread.is_alive()  # stopped with the app


def test_disabled_means_no_loop(fresh_planted: Any, tmp_path: Path) -> None:
    app = create_app(_settings(tmp_path, enabled=False), fresh_planted)
    with TestClient(app):
        assert getattr(app.state, "findings_loop", None) is None
        tables = fresh_planted.query_arrow(
            "SELECT name FROM system.tables WHERE database = currentDatabase() AND name LIKE 'finding%'"
        )["name"].to_pylist()
        assert "finding" in tables  # the tables exist all the same (the API reads them)

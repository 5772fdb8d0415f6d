"""Smoke test of bench/fleet/run.py: a few agents in two worker processes against a real server, for seconds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RUN = REPO / "bench" / "fleet" / "run.py"

pytestmark = pytest.mark.slow


def test_a_short_fleet_run_stores_everything_it_acknowledged(tmp_path: Path) -> None:
    env = {**os.environ, "NUMBA_CACHE_DIR": os.environ.get("NUMBA_CACHE_DIR", str(REPO / ".numba-cache"))}
    out = tmp_path / "fleet.json"
    args = ["--agents", "6", "--duration", "10", "--heartbeat", "2", "--ship-every", "1", "--rows", "50",
            "--procs", "2", "--work", str(tmp_path / "work"), "--out", str(out)]  # fmt: skip
    done = subprocess.run([sys.executable, str(RUN), *args], capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["registered"] == 6 and result["agents_in_registry"] >= 6
    assert result["batches"] > 0 and result["heartbeats"] > 0 and result["probe_heartbeats"] > 0
    assert result["rows_sent"] == result["rows_stored"] and result["nothing_lost"]
    assert sum(result["rows_stored"].values()) == result["batches"] * 2 * 50  # 50 flows + 50 edges per batch
    assert result["commands_delivered"] == 6  # every agent got its stop command through the long-poll

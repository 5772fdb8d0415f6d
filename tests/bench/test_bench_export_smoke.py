"""Smoke test of bench/export/ipfix.py: a ~20k-packet run of both sides, checked through ipfix.json."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RUN = REPO / "bench" / "export" / "ipfix.py"

pytestmark = pytest.mark.slow


def test_quick_run_delivers_everything_and_prints_ratios(tmp_path: Path) -> None:
    for tool in ("nfcapd", "nfdump", "softflowd"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed")
    env = {**os.environ, "NUMBA_CACHE_DIR": os.environ.get("NUMBA_CACHE_DIR", str(REPO / ".numba-cache"))}
    done = subprocess.run(
        [sys.executable, str(RUN), "--quick", "--out", str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ratio cloudtap meter+export / softflowd" in done.stdout
    result = json.loads((tmp_path / "ipfix.json").read_text())
    sides = result["sides"]
    assert set(sides) == {"cloudtap export alone", "cloudtap meter+export", "softflowd (read+meter+export)"}
    for name, side in sides.items():
        assert side["records"] > 0 and side["stored"] == side["records"], name  # nfcapd got every record
    assert sides["cloudtap export alone"]["records"] == sides["cloudtap meter+export"]["records"]
    assert result["ratio_packets_per_s"] > 0

"""Smoke test of bench/meter/run.py: a ~20k-packet run of every tool, checked through meter.json."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
RUN = REPO / "bench" / "meter" / "run.py"

#: What each tool needs on this machine (binaries, or a Python module for NFStream).
NEEDS: dict[str, tuple[str, ...]] = {
    "cloudtap": (),
    "softflowd": ("softflowd", "nfcapd", "nfdump"),
    "nfpcapd": ("nfpcapd", "nfdump"),
    "nfstream": (),
    "tcpdump": ("tcpdump",),
}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run the quick benchmark once and load its JSON."""
    out = tmp_path_factory.mktemp("bench-meter")
    env = dict(os.environ)
    env.setdefault("NUMBA_CACHE_DIR", str(REPO / ".numba-cache"))
    done = subprocess.run(
        [sys.executable, str(RUN), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=150,
        env=env,
        cwd=REPO,
    )
    report = out / "meter.json"
    assert report.is_file(), f"run.py wrote no meter.json (exit {done.returncode}):\n{done.stderr[-2000:]}"
    doc = json.loads(report.read_text())
    doc["_stdout"] = done.stdout
    return doc


def test_quick_capture_is_small_and_has_truth(results: dict[str, Any]) -> None:
    cap = results["capture"]
    assert 10_000 <= cap["packets"] <= 40_000
    assert cap["flows_truth"] > 100
    assert results["quick"] is True


@pytest.mark.parametrize("tool", list(NEEDS))
def test_tool_measured(results: dict[str, Any], tool: str) -> None:
    missing = [b for b in NEEDS[tool] if shutil.which(b) is None]
    if tool == "nfstream" and importlib.util.find_spec("nfstream") is None:
        missing.append("nfstream (python module)")
    if missing:
        pytest.skip(f"{tool} needs {', '.join(missing)}")
    entry = results["tools"][tool]
    assert entry["available"], entry.get("reason")
    assert not entry.get("error"), entry.get("error")
    assert entry["seconds"] > 0
    assert entry["mpps"] > 0
    assert entry["peak_rss_kb"] > 0
    if tool != "tcpdump":
        assert entry["flows"] > 0
        # every meter finds about the scenario's flows (they differ by timeout semantics, not by 2x)
        assert 0.8 <= entry["flows_vs_truth"] <= 1.25, entry
    if tool in ("cloudtap", "softflowd", "nfpcapd"):
        assert entry["packets"] == results["capture"]["packets"]


def test_cloudtap_detail(results: dict[str, Any]) -> None:
    mem = results["cloudtap_memory"]
    assert 0 < mem["bytes_per_flow_slot"] < 4096
    assert mem["peak_active_flows"] > 0
    assert results["cloudtap_steady"]["mpps"] > 0
    stages = results["cloudtap_steady"]["stages_s"]
    assert {"read", "decode", "meter"} <= set(stages)
    assert set(results["targets"]) >= {
        "speedup_vs_softflowd",
        "fraction_of_read_floor",
        "bytes_per_flow_slot",
    }
    assert "cloudtap" in results["_stdout"] and "targets" in results["_stdout"]

"""The seed case, found without being asked: the hourly DB backup is a ``periodic_transfer`` and its push a ``burst``.

The data is the analysis tests' seed-like cloud (``small-cloud``'s services over 3 h, ``db-01`` pushing a
backup to ``backup-01`` on port 873 at the top of every hour for 3 minutes), run through the scheduled
path (:meth:`FindingsEngine.run_due`) with the default settings.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudtap.server.findings.config import FindingsSection
from cloudtap.server.findings.engine import FindingsEngine

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "analyse"))
from analysedata import AnalyseData, DictNames, load, open_store  # noqa: E402


@pytest.fixture(scope="module")
def seed(chdb_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FindingsEngine]:
    data: AnalyseData = load(tmp_path_factory.getbasetemp() / "analyse-data")
    store = open_store(chdb_dsn, data, database="findings_seed")
    names = DictNames({k: v for k, v in data.inventory.items() if k != "ip"})
    engine = FindingsEngine(store, FindingsSection(max_catchup_minutes=180), names=lambda: names)
    try:
        done = engine.run_due(now_s=4_000_000_000)  # long after the capture: its newest 180 minutes are due
        assert done["minutes"] == 180
        yield engine
    finally:
        store.close()


def test_the_hourly_backup_is_a_periodic_transfer(seed: FindingsEngine) -> None:
    (f,) = [f for f in seed.findings.find(kind="periodic_transfer") if f.subject.client_vm == "db-01"]
    assert (f.subject.server_vm, f.subject.server_port) == ("backup-01", 873)
    assert abs(f.figures["period_s"] - 3600) <= 60 and f.figures["occurrences"] == 3
    assert f.figures["next_expected"].startswith("2026-11-20T03:00") and f.figures["direction"] == "c2s"
    assert "every 60 min" in f.summary


def test_its_push_is_a_burst_every_hour(seed: FindingsEngine) -> None:
    bursts = [f for f in seed.findings.find(kind="burst") if f.subject.client_vm == "db-01"]
    assert sorted(f.time_from[11:16] for f in bursts) == ["00:00", "01:00", "02:00"]
    assert all(f.subject.server_port == 873 and f.severity == "warning" for f in bursts)
    assert all(f.figures["seconds"] for f in bursts)  # measured at 1 s too


def test_nothing_else_is_above_info(seed: FindingsEngine) -> None:
    loud = [
        f.summary
        for f in seed.findings.find(limit=1000, severity="warning")
        if f.subject.client_vm != "db-01"
    ]
    assert not loud, loud

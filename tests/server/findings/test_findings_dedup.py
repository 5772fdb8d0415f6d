"""Deduplication, re-runs, acknowledgement and muting, retention, and the learned baseline's size."""

from __future__ import annotations

import time
from typing import Any

from findingsrun import TEST_CONFIG, Ran

from cloudtap.server.findings.engine import FindingsEngine
from cloudtap.server.findings.model import Detection, Subject


def _detection(t0: int, severity: str = "warning", bytes_: float = 1e6, port: int = 80) -> Detection:
    subject = Subject(client_ip="10.0.0.1", server_ip="10.0.0.2", server_port=port, proto=6, client_project_id=3,
                      label="a -> b")  # fmt: skip
    return Detection(kind="burst", severity=severity, subject=subject, time_from=t0, time_to=t0 + 60,  # type: ignore[arg-type]
                     summary=f"burst {bytes_}", figures={"bytes": bytes_}, baseline={"median_bytes": 0})  # fmt: skip


def test_detections_within_the_merge_gap_extend_one_finding(open_store: Any) -> None:
    delivered: list[list[dict[str, Any]]] = []
    engine = FindingsEngine(open_store(), TEST_CONFIG, notify=delivered.append)
    t0 = 1_795_132_800
    assert engine._fold([_detection(t0, bytes_=1e6)], t0) == (1, 0)
    assert engine._fold([_detection(t0 + 120, bytes_=5e6)], t0 + 120) == (0, 1)
    assert engine._fold([_detection(t0 + 120, bytes_=5e6)], t0 + 120) == (0, 0)  # a re-run adds nothing
    assert engine._fold([_detection(t0 + 240, "critical", 2e6)], t0 + 240) == (0, 1)  # escalates
    (f,) = engine.findings.find()
    assert (f.time_from, f.time_to, f.detections) == ("2026-11-20T00:00:00Z", "2026-11-20T00:05:00Z", 3)
    assert f.severity == "critical" and f.figures["peak_bytes"] == 5e6 and f.figures["bytes"] == 2e6
    assert [len(d) for d in delivered] == [1, 1]  # new, then the escalation
    later = t0 + 240 + 60 + TEST_CONFIG.merge_gap_s + 60
    assert engine._fold([_detection(int(later))], int(later)) == (1, 0)  # past the gap: a new episode
    assert len(engine.findings.find()) == 2


def test_ack_and_mute_record_who_and_why(open_store: Any) -> None:
    delivered: list[list[dict[str, Any]]] = []
    engine = FindingsEngine(open_store(), TEST_CONFIG, notify=delivered.append)
    t0 = 1_795_132_800
    engine._fold([_detection(t0)], t0)
    (f,) = engine.findings.find()
    engine.findings.act(f, "ack", "alice", "known: nightly job")
    (f,) = engine.findings.find()
    assert f.state == "acknowledged" and (f.actions[0].user, f.actions[0].reason) == (
        "alice",
        "known: nightly job",
    )
    engine.findings.act(f, "mute", "bob", "noisy", until_s=time.time() + 3600)
    assert engine.findings.get(f.id).state == "muted"  # type: ignore[union-attr]
    assert engine.findings.find(state="muted")[0].id == f.id
    later = t0 + 3600  # a new episode of the same subject: stored, muted, not delivered
    engine._fold([_detection(later)], later)
    assert len(delivered) == 1
    newer = engine.findings.find()[0]
    assert newer.id != f.id and newer.state == "muted"
    engine.findings.act(newer, "unmute", "bob", "fixed")
    assert {x.state for x in engine.findings.find()} == {"acknowledged", "open"}
    engine.findings.act(newer, "mute", "bob", "briefly", until_s=time.time() - 1)  # already over
    assert engine.findings.get(newer.id).state == "open"  # type: ignore[union-attr]


def test_findings_expire_by_retention(open_store: Any) -> None:
    store = open_store()
    engine = FindingsEngine(store, TEST_CONFIG.model_copy(update={"retention_days": 7}))
    engine.findings.ensure()
    for table in ("finding", "finding_action"):
        ddl = store.command(f"SHOW CREATE TABLE {store.database}.{table}")
        assert "TTL" in ddl and str(7 * 86400) in ddl, ddl
    seen = store.command(f"SHOW CREATE TABLE {store.database}.finding_seen_edge")
    assert "TTL" in seen and str(int(TEST_CONFIG.baseline_days * 86400)) in seen


def test_a_rerun_of_a_window_changes_nothing(planted: Ran) -> None:
    before = {(f.id, f.detections, f.time_to) for f in planted.engine.findings.find(limit=1000)}
    again = planted.engine.run_range(planted.data.start_s, planted.data.start_s + 30 * 60)
    assert (again["new"], again["extended"]) == (0, 0)
    assert {(f.id, f.detections, f.time_to) for f in planted.engine.findings.find(limit=1000)} == before


def test_the_baseline_holds_one_row_per_edge(planted: Ran) -> None:
    db = planted.store.database
    rows = planted.store.query_arrow(
        f"SELECT count() AS n, uniqExact(client_ip, server_ip, server_port, proto) AS u FROM {db}.finding_seen_edge FINAL"
    ).to_pylist()[0]
    edges = planted.store.query_arrow(
        f"SELECT uniqExact(client_ip, server_ip, server_port, proto) AS u FROM {db}.edge_1m"
    ).to_pylist()[0]
    assert rows["n"] == rows["u"] == edges["u"]


def test_the_scheduled_run_picks_up_after_the_cursor(fresh_planted: Any) -> None:
    engine = FindingsEngine(fresh_planted, TEST_CONFIG.model_copy(update={"max_catchup_minutes": 5}))
    first = engine.run_due()
    assert first["minutes"] == 5  # the newest complete minutes only
    assert engine.run_due()["minutes"] == 0  # nothing new since
    last, _ = engine.findings.cursor()
    assert last == first["to"] - 60

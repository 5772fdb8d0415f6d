"""Drill-down into the database VM, its IP and the backup edge."""

from __future__ import annotations

from typing import Any

import pytest
from analysedata import AnalyseData, DictNames

from cloudtap.server.analyse import AnalysisError, DrillRequest, drill

A = {"time_from": "2026-11-20T01:55:00Z", "time_to": "2026-11-20T02:10:00Z"}


def test_drill_names_the_peer_and_the_one_way_push(astore: Any, names: DictNames, adata: AnalyseData) -> None:
    db, backup = adata.ip_of("db-01"), adata.ip_of("backup-01")
    r = drill(astore, DrillRequest(**A, target={"vm": "db-01"}), names)
    peer = r.by_peer[0]
    assert (peer.key, peer.peer_ip, peer.role) == ("backup-01", backup, "client") and peer.share > 0.9
    assert peer.bytes_out > 20 * peer.bytes_in
    assert r.by_port[0].key == "873/tcp" and any(p.key == "5432/tcp" and p.role == "server" for p in r.by_port)
    assert r.by_proto[0].key == "tcp" and {p.key for p in r.by_direction} == {"as client", "as server"}
    assert sum(p.bytes for p in r.by_direction) == r.total_bytes
    [push] = r.one_way
    assert (push.from_ip, push.to_ip, push.server_port, push.direction) == (db, backup, 873, "c2s")
    assert push.client_name == "db-01" and push.server_name == "backup-01" and push.ratio > 20
    assert r.top_talkers[0].server == backup and r.top_talkers[0].close_type == "fin"
    assert sum(f.count for f in r.failed_handshakes) == r.failed_total
    assert all(f.close_type in ("syn_unanswered", "server_refused", "half_open") for f in r.failed_handshakes)
    assert {c.key for c in r.by_close_type} >= {"fin"}


def test_drill_an_edge(astore: Any, names: DictNames, adata: AnalyseData) -> None:
    db, backup = adata.ip_of("db-01"), adata.ip_of("backup-01")
    r = drill(astore, DrillRequest(**A, target={"client_ip": db, "server_ip": backup}), names)
    assert [p.key for p in r.by_peer] == ["backup-01"] and r.by_peer[0].share == 1.0
    assert r.failed_total == 0 and len(r.top_talkers) == 1


def test_failed_handshakes_of_the_database(astore: Any, names: DictNames, adata: AnalyseData) -> None:
    r = drill(astore, DrillRequest(time_from="2026-11-20T00:00:00Z", time_to="2026-11-20T03:00:00Z",
                                   target={"ip": adata.ip_of("db-02")}), names)  # fmt: skip
    f = adata.tables["flows"]
    db2 = adata.ip_of("db-02")
    want = sum(1 for s, c in zip(f["server_ip"].to_pylist(), f["close_type"].to_pylist(), strict=True)
               if s == db2 and c in ("syn_unanswered", "server_refused", "half_open"))  # fmt: skip
    assert want > 0 and r.failed_total == want


def test_drill_needs_a_target(astore: Any) -> None:
    with pytest.raises(AnalysisError) as err:
        drill(astore, DrillRequest(**A, target={"port": 80}))
    assert err.value.field == "target"

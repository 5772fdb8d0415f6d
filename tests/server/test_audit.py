"""The audit log: append-only JSON lines, rotated by size, read back across rotations."""

from __future__ import annotations

from pathlib import Path

from cloudtap.server.audit import AuditLog


def test_records_rotate_by_size_and_read_back_in_order(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl", max_bytes=600, keep=3)
    for i in range(30):
        log.record("policy.put", "ops", policy=f"p{i}")
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2", "audit.jsonl.3"]
    assert all((tmp_path / f).stat().st_size <= 600 for f in files)
    assert (tmp_path / "audit.jsonl").stat().st_mode & 0o077 == 0
    kept = [r["policy"] for r in log.read()]
    assert kept == [f"p{i}" for i in range(30 - len(kept), 30)]  # the newest, oldest first, none lost in between


def test_filters(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    log.record("pcap.retrieve", "alice", vm="db-01")
    log.record("auth.login", None, "refused", user="mallory")
    log.record("policy.put", "bob")
    assert [r["action"] for r in log.read(action="pcap.")] == ["pcap.retrieve"]
    assert [r["outcome"] for r in log.read(action="auth.login")] == ["refused"]
    assert [r["action"] for r in log.read(actor="bob")] == ["policy.put"]
    assert len(log.read(limit=2)) == 2

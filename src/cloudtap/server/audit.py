"""The audit log: one append-only JSON line per security-relevant act, rotated by size.

Recorded: every PCAP retrieval (served or not), config/group/policy change, capture start/stop, agent
deletion, user/role/token change and failed login, with the authenticated principal (never a header
the caller chose). Lines are written with one ``write`` on an ``O_APPEND`` descriptor, so they never
interleave; at ``max_bytes`` the file is renamed ``audit.jsonl.1`` (older ones shift up, ``keep`` kept).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cloudtap.server.settings import ServerSettings


def default_audit_path(settings: ServerSettings) -> Path:
    """``auth.audit_log``, else ``<chDB data dir>/audit.jsonl``, else ``/var/lib/cloudtap/audit.jsonl``."""
    if settings.auth.audit_log is not None:
        return settings.auth.audit_log
    dsn = settings.storage.dsn
    if dsn.startswith("chdb://"):
        return Path(dsn[len("chdb://") :]) / "audit.jsonl"
    return Path("/var/lib/cloudtap/audit.jsonl")


class AuditLog:
    """Appends audit records to a JSONL file and reads them back (newest last).

    Args:
        path: the live file.
        max_bytes: rotate when the live file would grow past this.
        keep: rotated files kept (``path.1`` newest .. ``path.<keep>`` oldest).
    """

    def __init__(self, path: Path, max_bytes: int = 64 << 20, keep: int = 20) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.keep = keep
        self._lock = threading.Lock()

    def record(self, action: str, actor: str | None, outcome: str = "ok", **detail: Any) -> dict[str, Any]:
        """Append one record.

        Args:
            action: what was done, dotted (``pcap.retrieve``, ``policy.put``, ``auth.login``...).
            actor: the authenticated principal's name (None: not authenticated).
            outcome: ``ok``, ``refused`` or ``failed``.
            detail: what it was done to, and how it ended (JSON-serialisable).
        Returns:
            The record as written.
        """
        now = time.time_ns()
        line = {"time": datetime.fromtimestamp(now / 1e9, UTC).isoformat(), "time_ns": now, "action": action,
                "actor": actor, "outcome": outcome, **detail}  # fmt: skip
        data = (json.dumps(line, default=str, separators=(",", ":")) + "\n").encode()
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.exists() and self.path.stat().st_size + len(data) > self.max_bytes:
                self._rotate()
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
        return line

    def _rotate(self) -> None:
        oldest = self._rotated(self.keep)
        if oldest.exists():
            oldest.unlink()
        for i in range(self.keep - 1, 0, -1):
            if self._rotated(i).exists():
                self._rotated(i).rename(self._rotated(i + 1))
        self.path.rename(self._rotated(1))

    def _rotated(self, i: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{i}")

    def _lines(self) -> Iterator[str]:
        files = [self._rotated(i) for i in range(self.keep, 0, -1)] + [self.path]
        for f in files:
            if f.is_file():
                yield from f.read_text(encoding="utf-8").splitlines()

    def read(self, since_ns: int = 0, action: str | None = None, actor: str | None = None,
             limit: int | None = None) -> list[dict[str, Any]]:  # fmt: skip
        """Records oldest first, optionally since a time, of an action (prefix ``pcap.`` matches
        ``pcap.retrieve``) or of an actor; the newest ``limit``."""
        out = []
        for text in self._lines():
            if not text.strip():
                continue
            rec = json.loads(text)
            if rec.get("time_ns", 0) < since_ns:
                continue
            if action and not (rec.get("action") == action or (action.endswith(".") and str(rec.get("action", "")).startswith(action))):
                continue
            if actor and rec.get("actor") != actor:
                continue
            out.append(rec)
        return out[-limit:] if limit else out


def audit_of(app: Any) -> AuditLog:
    """The app's audit log (built on first use from its settings)."""
    log = getattr(app.state, "audit", None)
    if log is None:
        auth = app.state.settings.auth
        log = app.state.audit = AuditLog(default_audit_path(app.state.settings), int(auth.audit_max_mib * (1 << 20)),
                                         auth.audit_keep)  # fmt: skip
    return log  # type: ignore[no-any-return]

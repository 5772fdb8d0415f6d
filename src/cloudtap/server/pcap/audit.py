"""Audit log of PCAP retrievals: one JSON line per retrieval (who, what, when, how much, outcome)."""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cloudtap.server.settings import ServerSettings


def default_audit_path(settings: ServerSettings) -> Path:
    """``pcap.audit_log``, else ``<chDB data dir>/pcap-audit.jsonl``, else ``/var/lib/cloudtap/pcap-audit.jsonl``."""
    if settings.pcap.audit_log is not None:
        return settings.pcap.audit_log
    dsn = settings.storage.dsn
    if dsn.startswith("chdb://"):
        return Path(dsn[len("chdb://") :]) / "pcap-audit.jsonl"
    return Path("/var/lib/cloudtap/pcap-audit.jsonl")


class AuditLog:
    """Appends retrieval records to a JSONL file (one ``write`` per line, O_APPEND: lines never interleave)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def record(self, **entry: Any) -> dict[str, Any]:
        """Append one record; ``time`` (ISO 8601 UTC) and ``time_ns`` are added.

        Returns:
            The record as written.
        """
        now = time.time_ns()
        line = {"time": datetime.fromtimestamp(now / 1e9, UTC).isoformat(), "time_ns": now, **entry}
        data = (json.dumps(line, default=str, separators=(",", ":")) + "\n").encode()
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
        return line

    def read(self) -> list[dict[str, Any]]:
        """Every record so far (oldest first)."""
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]

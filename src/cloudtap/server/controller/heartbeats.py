"""Heartbeats: each agent's latest report (persisted in batches) and its short history."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass

from cloudtap.server.controller.db import StateDB
from cloudtap.server.controller.status import HeartbeatReport, History, Sample


@dataclass(frozen=True)
class Latest:
    """An agent's last report and when it arrived (server clock, s since the epoch)."""

    at: float
    report: HeartbeatReport


class Heartbeats:
    """Latest report per agent + history for the fleet tops."""

    def __init__(self, db: StateDB) -> None:
        self.db = db
        self.history = History()
        self._lock = threading.Lock()
        self._latest: dict[str, Latest] = {}
        self._dirty: set[str] = set()
        self._loaded = 0.0  #: the newest ``last_seen`` read from the database
        db.subscribe("agents_seen", self.reload)  # reports another server process received and flushed
        self.reload()

    def reload(self, _detail: str = "") -> None:
        """Read the reports flushed since the last read (a few seconds' overlap: flushes are not atomic)."""
        rows = self.db.rows("SELECT id, last_seen, status FROM agents WHERE status != '{}' AND last_seen > ?",
                            (self._loaded - 10.0,))  # fmt: skip
        with self._lock:
            for row in rows:
                self._loaded = max(self._loaded, row["last_seen"])
                known = self._latest.get(row["id"])
                if known is not None and known.at >= row["last_seen"]:
                    continue
                try:
                    report = HeartbeatReport.model_validate(json.loads(row["status"]))
                except ValueError:
                    continue
                self._latest[row["id"]] = Latest(row["last_seen"], report)

    def record(self, agent_id: str, at: float, report: HeartbeatReport) -> Latest | None:
        """Store a report; returns the previous one."""
        with self._lock:
            previous = self._latest.get(agent_id)
            self._latest[agent_id] = Latest(at, report)
            self._dirty.add(agent_id)
        self.history.add(agent_id, Sample.of(at, report))
        return previous

    def latest(self, agent_id: str) -> Latest | None:
        return self._latest.get(agent_id)

    def seen_macs(self) -> dict[str, dict[str, str]]:
        """Agent id -> {VM MAC -> interface name} from the latest reports."""
        with self._lock:
            items = list(self._latest.items())
        return {a: {i.mac.lower(): i.name for i in last.report.interfaces if i.mac} for a, last in items}

    def forget(self, agent_id: str) -> None:
        with self._lock:
            self._latest.pop(agent_id, None)
        self.history.forget(agent_id)

    def flush(self) -> None:
        """Persist the latest reports that changed since the last flush."""
        with self._lock:
            dirty, self._dirty = self._dirty, set()
            rows = [(self._latest[a].report.model_dump_json(), a) for a in dirty if a in self._latest]
        if rows:
            with self.db.transaction() as conn:
                conn.executemany("UPDATE agents SET status = ? WHERE id = ?", rows)

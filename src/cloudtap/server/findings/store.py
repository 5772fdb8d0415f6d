"""FindingStore: findings, their ack/mute actions, the engine's cursor, in the flow store's database.

Reads go through the unscoped store with ``additional_table_filters`` built from the caller's project
ids (:func:`~cloudtap.server.findings.ddl.scope_filters`), so a project-bound caller never reads a row
of another project's finding, as with flows. Writes come from the engine and from operators' actions.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from cloudtap.server.access.scope import table_filters_setting
from cloudtap.server.findings.ddl import ensure_schema, scope_filters, table
from cloudtap.server.findings.model import SEVERITIES, Action, Finding, Subject

ProjectIds = frozenset[int] | None


def iso_s(epoch_s: float) -> str:
    """``2026-11-20T01:00:00Z`` (milliseconds when not whole)."""
    dt = datetime.fromtimestamp(epoch_s, UTC)
    text = dt.isoformat(timespec="milliseconds" if epoch_s % 1 else "seconds")
    return text.replace("+00:00", "Z")


def _epoch(value: Any) -> float:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    return float(value)


class FindingStore:
    """Findings in ``store`` (a ClickHouseStore: ``query_arrow`` with settings, ``command``)."""

    def __init__(self, store: Any, retention_days: float = 30.0, baseline_days: float = 28.0) -> None:
        self.store = store
        self.retention_days = retention_days
        self.baseline_days = baseline_days
        self._ready = False

    def ensure(self) -> None:
        """Create the tables once."""
        if not self._ready:
            ensure_schema(self.store, self.retention_days, self.baseline_days)
            self._ready = True

    def t(self, name: str) -> str:
        """Quoted name of a findings table."""
        return table(self.store, name)

    def read(
        self, sql: str, params: dict[str, Any] | None = None, projects: ProjectIds = None
    ) -> list[dict[str, Any]]:
        """Rows of a read, limited to ``projects`` (None: all)."""
        self.ensure()
        filters = scope_filters(self.store, projects)
        settings = {"additional_table_filters": table_filters_setting(filters)} if filters else None
        return self.store.query_arrow(sql, params or {}, settings=settings).to_pylist()  # type: ignore[no-any-return]

    def insert_rows(self, name: str, rows: list[dict[str, Any]]) -> None:
        """Append rows (JSON objects) to a findings table."""
        if not rows:
            return
        self.ensure()
        body = "\n".join(json.dumps(r, separators=(",", ":")) for r in rows)
        self.store.command(f"INSERT INTO {self.t(name)} FORMAT JSONEachRow\n{body}")

    # -- findings ------------------------------------------------------------------------------------
    def recent(self, since_s: int) -> list[dict[str, Any]]:
        """Newest version of every finding whose window ends at or after ``since_s`` (for extension)."""
        return self.read(
            f"SELECT * FROM {self.t('finding')} FINAL WHERE time_to >= toDateTime({{s:Int64}}, 'UTC')",
            {"s": since_s},
        )

    def save(self, rows: list[dict[str, Any]]) -> None:
        """Write findings (new or extended: a higher version replaces the older)."""
        self.insert_rows("finding", rows)

    def find(self, projects: ProjectIds = None, kind: str | None = None, severity: str | None = None,
             state: str | None = None, time_from: int | None = None, time_to: int | None = None,
             limit: int = 100, updated_from: float | None = None) -> list[Finding]:  # fmt: skip
        """Findings overlapping ``[time_from, time_to)`` (and updated since ``updated_from``, wall clock),
        newest first, with their state and actions."""
        where: list[str] = ["1"]
        params: dict[str, Any] = {}
        if updated_from is not None:
            where.append("updated >= toDateTime64({uf:Float64}, 3, 'UTC')")
            params["uf"] = float(updated_from)
        if kind:
            where.append("kind = {kind:String}")
            params["kind"] = kind
        if severity:
            where.append("severity IN {sev:Array(String)}")
            params["sev"] = list(SEVERITIES[SEVERITIES.index(severity) :])
        if time_from is not None:
            where.append("time_to > toDateTime({tf:Int64}, 'UTC')")
            params["tf"] = int(time_from)
        if time_to is not None:
            where.append("time_from < toDateTime({tt:Int64}, 'UTC')")
            params["tt"] = int(time_to)
        rows = self.read(
            f"SELECT * FROM {self.t('finding')} FINAL WHERE {' AND '.join(where)} "
            f"ORDER BY time_to DESC, id LIMIT {int(limit) * (4 if state else 1)}",
            params, projects,
        )  # fmt: skip
        found = self._with_actions(rows, projects)
        if state:
            found = [f for f in found if f.state == state]
        return found[:limit]

    def get(self, finding_id: str, projects: ProjectIds = None) -> Finding | None:
        """One finding (None when absent or outside ``projects``)."""
        rows = self.read(
            f"SELECT * FROM {self.t('finding')} FINAL WHERE id = {{id:String}}", {"id": finding_id}, projects
        )
        found = self._with_actions(rows, projects)
        return found[0] if found else None

    def _with_actions(self, rows: list[dict[str, Any]], projects: ProjectIds) -> list[Finding]:
        if not rows:
            return []
        actions = self.actions(
            [r["id"] for r in rows], {(r["kind"], r["subject_key"]) for r in rows}, projects
        )
        now = time.time()
        out = []
        for r in rows:
            own = actions.get(r["id"], [])
            subject_mutes = [
                a for a in actions.get(f"{r['kind']}|{r['subject_key']}", []) if a.finding_id != r["id"]
            ]
            out.append(Finding(
                id=r["id"], kind=r["kind"], severity=r["severity"], subject=Subject.model_validate_json(r["subject"]),
                time_from=iso_s(_epoch(r["time_from"])), time_to=iso_s(_epoch(r["time_to"])),
                first_detected=iso_s(_epoch(r["first_detected"])), updated=iso_s(_epoch(r["updated"])),
                detections=int(r["detections"]), summary=r["summary"], figures=json.loads(r["figures"]),
                baseline=json.loads(r["baseline"]), reproduce=r["reproduce"],
                state=state_of(own, subject_mutes, now), actions=own,  # type: ignore[arg-type]
            ))  # fmt: skip
        return out

    # -- actions -------------------------------------------------------------------------------------
    def act(
        self, finding: Finding, action: str, user: str, reason: str = "", until_s: float | None = None
    ) -> Action:
        """Record an operator's ``ack`` / ``mute`` / ``unmute`` of ``finding`` (a mute covers later findings
        of the same kind and subject too, until it ends or is lifted)."""
        now = time.time()
        row = {
            "finding_id": finding.id, "kind": finding.kind, "subject_key": finding.subject.key(), "action": action,
            "user": user, "reason": reason, "at": round(now, 3), "until": None if until_s is None else round(until_s, 3),
            "client_project_id": finding.subject.client_project_id, "server_project_id": finding.subject.server_project_id,
        }  # fmt: skip
        self.insert_rows("finding_action", [row])
        return Action(finding_id=finding.id, action=action, user=user, reason=reason, at=iso_s(now),  # type: ignore[arg-type]
                      until=None if until_s is None else iso_s(until_s))  # fmt: skip

    def actions(
        self, ids: list[str], subjects: set[tuple[str, str]], projects: ProjectIds = None
    ) -> dict[str, list[Action]]:
        """Actions per finding id, and mutes per ``kind|subject_key``, oldest first."""
        rows = self.read(
            f"SELECT finding_id, kind, subject_key, action, user, reason, toUnixTimestamp64Milli(at) AS at_ms, "
            f"toUnixTimestamp64Milli(until) AS until_ms FROM {self.t('finding_action')} "
            f"WHERE finding_id IN {{ids:Array(String)}} OR (action IN ('mute', 'unmute') AND "
            f"concat(kind, '|', subject_key) IN {{subs:Array(String)}}) ORDER BY at",
            {"ids": ids, "subs": [f"{k}|{s}" for k, s in subjects]}, projects,
        )  # fmt: skip
        out: dict[str, list[Action]] = {}
        for r in rows:
            a = Action(finding_id=r["finding_id"], action=r["action"], user=r["user"], reason=r["reason"],
                       at=iso_s(r["at_ms"] / 1000),
                       until=None if r["until_ms"] is None else iso_s(r["until_ms"] / 1000))  # fmt: skip
            if r["finding_id"] in ids:
                out.setdefault(r["finding_id"], []).append(a)
            if r["action"] in ("mute", "unmute"):
                out.setdefault(f"{r['kind']}|{r['subject_key']}", []).append(a)
        return out

    def muted_subjects(self, now_s: float | None = None) -> set[str]:
        """``kind|subject_key`` of every subject under an active mute (the engine's check for new findings)."""
        now = time.time() if now_s is None else now_s
        rows = self.read(
            f"SELECT concat(kind, '|', subject_key) AS sub, argMax(action, at) AS last, "
            f"argMax(toUnixTimestamp64Milli(until), at) AS until_ms FROM {self.t('finding_action')} "
            f"WHERE action IN ('mute', 'unmute') GROUP BY sub"
        )
        return {
            r["sub"]
            for r in rows
            if r["last"] == "mute" and (r["until_ms"] is None or r["until_ms"] / 1000 > now)
        }

    # -- cursor --------------------------------------------------------------------------------------
    def cursor(self) -> tuple[int | None, int | None]:
        """(last minute processed, baseline start), epoch s; None when the engine never ran."""
        rows = self.read(
            f"SELECT toUnixTimestamp(minute) AS m, toUnixTimestamp(baseline_start) AS b "
            f"FROM {self.t('finding_cursor')} FINAL WHERE name = 'engine'"
        )
        return (int(rows[0]["m"]), int(rows[0]["b"])) if rows else (None, None)

    def set_cursor(self, minute_s: int, baseline_start_s: int) -> None:
        """Record the last minute processed."""
        self.insert_rows("finding_cursor", [{"name": "engine", "minute": int(minute_s),
                                             "baseline_start": int(baseline_start_s), "updated": round(time.time(), 3)}])  # fmt: skip


def state_of(own: list[Action], subject_mutes: list[Action], now_s: float) -> str:
    """``muted`` under an active mute (its own or its subject's), else ``acknowledged`` once acked, else ``open``."""
    mutes = sorted([a for a in own + subject_mutes if a.action in ("mute", "unmute")], key=lambda a: a.at)
    if mutes and mutes[-1].action == "mute":
        until = mutes[-1].until
        if until is None or datetime.fromisoformat(until.replace("Z", "+00:00")).timestamp() > now_s:
            return "muted"
    return "acknowledged" if any(a.action == "ack" for a in own) else "open"

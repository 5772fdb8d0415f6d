"""FindingsEngine: run the detectors on a minute, fold detections into findings, deliver the new ones.

One cycle = one minute ``[t0, t0 + 60)``: the detectors read the minute's edges (and each its own fixed
look-back), then the minute's edges join the learned baseline. Detections of the same kind and subject
whose windows lie within the merge gap of a finding extend it (a new version of the same id: ``time_to``,
count, peaks, latest figures) instead of adding one per minute. New findings (and severity rises) not
under a mute go to the notifier (the Alertmanager webhook). Cycles are serialised by a lock; a failing
detector costs its kind in that cycle (counted), not the cycle.

:meth:`run_due` processes the minutes from the cursor to the newest complete one (the scheduled loop);
:meth:`run_range` any past window (``cloudtap findings run --from --to``). Both are incremental: a cycle
reads one minute, one fixed look-back per detector and the baseline's distinct edges.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from cloudtap.inventory.names import NameResolver, NoNames
from cloudtap.server.findings.config import FindingsSection
from cloudtap.server.findings.context import Cycle
from cloudtap.server.findings.detect_isolation import detect_isolation
from cloudtap.server.findings.detect_lb import detect_lb
from cloudtap.server.findings.detect_new import detect_new, refresh_seen
from cloudtap.server.findings.detect_periodic import detect_periodic
from cloudtap.server.findings.detect_requests import detect_slow_requests
from cloudtap.server.findings.detect_traffic import detect_traffic
from cloudtap.server.findings.model import Detection, finding_id, severity_rank
from cloudtap.server.findings.rules import RuleStore
from cloudtap.server.findings.store import FindingStore
from cloudtap.server.store.ddl import ident

log = logging.getLogger(__name__)
DETECTORS: dict[str, Callable[[Cycle], list[Detection]]] = {
    "new": detect_new, "traffic": detect_traffic, "periodic": detect_periodic, "lb": detect_lb,
    "isolation": detect_isolation, "requests": detect_slow_requests,
}  # fmt: skip
#: Numeric figures whose largest value over the finding's life is kept as ``peak_<name>``.
PEAK_KEYS = ("bytes", "z", "retrans", "failed", "targets", "flows", "top_share", "p99_ms")
#: Findings this old (by their end) are no longer extended from memory; the store keeps them.
CACHE_S = 2 * 86400
MINUTE = 60


class FindingsEngine:
    """Detect, deduplicate, store and deliver findings over ``store``.

    Args:
        store: the (unscoped) flow store.
        config: the ``findings`` settings.
        names: a callable returning the inventory's NameResolver (or None) at each cycle.
        notify: called with the list of finding rows to deliver (new or escalated, not muted).
    """

    def __init__(self, store: Any, config: FindingsSection | None = None,
                 names: Callable[[], NameResolver | None] | None = None,
                 notify: Callable[[list[dict[str, Any]]], None] | None = None) -> None:  # fmt: skip
        self.store = store
        self.config = config or FindingsSection()
        self.findings = FindingStore(store, self.config.retention_days, self.config.baseline_days)
        self.rules = RuleStore(self.findings)
        self._names = names or (lambda: None)
        self.notify = notify
        self._lock = threading.Lock()
        self._open: dict[str, dict[str, Any]] = {}
        self._cache_from: int | None = None
        self.cycles = 0
        self.errors: Counter[str] = Counter()
        self.new_findings: Counter[tuple[str, str]] = Counter()
        self.detections: Counter[str] = Counter()
        self.last_cycle_s = 0.0
        self.last_minute: int | None = None
        self.last_run_at: float | None = None

    # -- which minutes ---------------------------------------------------------------------------
    def newest_complete_minute(self, now_s: float | None = None) -> int | None:
        """Start of the newest minute that is complete: stored in ``edge_1m`` and over ``lag_s`` ago."""
        found = self.store.query_arrow(
            f"SELECT toUnixTimestamp(max(time)) AS m, count() AS n FROM {ident(self.store.database)}.edge_1m"
        ).to_pylist()[0]
        if not found["n"]:
            return None
        now = time.time() if now_s is None else now_s
        by_clock = int((now - self.config.lag_s) // MINUTE) * MINUTE - MINUTE
        return min(int(found["m"]) // MINUTE * MINUTE, by_clock)

    def run_due(self, now_s: float | None = None) -> dict[str, Any]:
        """Process the minutes after the cursor up to the newest complete one (at most ``max_catchup_minutes``)."""
        self.findings.ensure()
        newest = self.newest_complete_minute(now_s)
        if newest is None:
            return {"minutes": 0, "new": 0, "extended": 0}
        last, _ = self.findings.cursor()
        start = newest - (self.config.max_catchup_minutes - 1) * MINUTE
        if last is not None:
            start = max(start, last + MINUTE)
        if start > newest:
            return {"minutes": 0, "new": 0, "extended": 0}
        return self.run_range(start, newest + MINUTE)

    def run_range(self, t_from: int, t_to: int) -> dict[str, Any]:
        """Run every whole minute of ``[t_from, t_to)`` (epoch s) that holds edges, in order; a summary of what changed."""
        self.findings.ensure()
        first = -(-int(t_from) // MINUTE) * MINUTE
        last = int(t_to) // MINUTE * MINUTE
        totals = {"minutes": 0, "new": 0, "extended": 0, "from": first, "to": last}
        for t0 in self.minutes_with_data(first, last):
            new, extended = self.run_minute(t0)
            totals["minutes"] += 1
            totals["new"] += new
            totals["extended"] += extended
        return totals

    def minutes_with_data(self, t_from: int, t_to: int) -> list[int]:
        """Starts of the minutes of ``[t_from, t_to)`` that hold edges (an empty minute has nothing to find)."""
        rows = self.store.query_arrow(
            f"SELECT DISTINCT toUnixTimestamp(toStartOfMinute(time)) AS m FROM {ident(self.store.database)}.edge_1m "
            f"WHERE time >= toDateTime({{t0:Int64}}, 'UTC') AND time < toDateTime({{t1:Int64}}, 'UTC') ORDER BY m",
            {"t0": int(t_from), "t1": int(t_to)},
        )
        return [int(m) for m in rows["m"].to_pylist()]

    # -- one minute ------------------------------------------------------------------------------
    def run_minute(self, t0: int) -> tuple[int, int]:
        """Detect on ``[t0, t0 + 60)`` and fold; returns (new findings, extended findings)."""
        with self._lock:
            started = time.perf_counter()
            self.findings.ensure()
            last, baseline_start = self.findings.cursor()
            baseline_start = t0 if baseline_start is None else min(baseline_start, t0)
            cycle = Cycle(self.store, self.config, t0, t0 + MINUTE, self._names() or NoNames(), baseline_start,
                          self._rules())  # fmt: skip
            detections: list[Detection] = []
            for name, detector in DETECTORS.items():
                try:
                    detections += detector(cycle)
                except Exception:  # one kind lost for this minute, counted and logged; the others go on
                    self.errors[name] += 1
                    log.exception("findings: the %s detector failed on minute %s", name, t0)
            refresh_seen(cycle)
            new, extended = self._fold(detections, t0)
            self.findings.set_cursor(max(t0, last or t0), baseline_start)
            self.cycles += 1
            self.last_minute = t0
            self.last_run_at = time.time()
            self.last_cycle_s = time.perf_counter() - started
            return new, extended

    def _rules(self) -> list[Any]:
        try:
            return self.rules.in_force()
        except Exception:
            self.errors["rules"] += 1
            log.exception("findings: cannot read the isolation rules")
            return []

    # -- deduplication ----------------------------------------------------------------------------
    def _load_open(self, t0: int) -> None:
        since = t0 - CACHE_S
        if self._cache_from is not None and self._cache_from <= since:
            self._open = {k: r for k, r in self._open.items() if r["time_to"] >= since}
            return
        self._open = {}
        for row in self.findings.recent(since):
            row = {**row, "time_from": _s(row["time_from"]), "time_to": _s(row["time_to"]),
                   "first_detected": _s(row["first_detected"]), "updated": _s(row["updated"])}  # fmt: skip
            key = f"{row['kind']}|{row['subject_key']}"
            if key not in self._open or self._open[key]["time_to"] < row["time_to"]:
                self._open[key] = row
        self._cache_from = since

    def _fold(self, detections: list[Detection], t0: int) -> tuple[int, int]:
        if not detections:
            return 0, 0
        self._load_open(t0)
        muted = self.findings.muted_subjects()
        now = round(time.time(), 3)
        rows, deliver, new, extended = [], [], 0, 0
        for d in detections:
            self.detections[d.kind] += 1
            key = f"{d.kind}|{d.subject.key()}"
            gap = self.config.merge_gap_s if d.merge_gap_s is None else d.merge_gap_s
            old = self._open.get(key)
            if (
                old is not None
                and d.time_from <= old["time_to"] + gap
                and d.time_to >= old["time_from"] - gap
            ):
                row = _extend(old, d, now)
                if row is None:
                    continue
                extended += 1
                if severity_rank(d.severity) > severity_rank(old["severity"]) and key not in muted:
                    deliver.append(row)
            else:
                row = _new_row(d, now)
                new += 1
                self.new_findings[(d.kind, d.severity)] += 1
                if key not in muted:
                    deliver.append(row)
            self._open[key] = row
            rows.append(row)
        self.findings.save([_stored(r) for r in rows])
        if deliver and self.notify is not None:
            try:
                self.notify(deliver)
            except Exception:
                self.errors["notify"] += 1
                log.exception("findings: delivery failed")
        return new, extended


def _s(value: Any) -> int:
    return int(value.timestamp()) if hasattr(value, "timestamp") else int(value)


def _new_row(d: Detection, now: float) -> dict[str, Any]:
    key = d.subject.key()
    return {
        "id": finding_id(d.kind, key, d.time_from), "kind": d.kind, "severity": d.severity, "subject_key": key,
        "subject": d.subject.model_dump_json(), "summary": d.summary, "time_from": d.time_from, "time_to": d.time_to,
        "first_detected": now, "updated": now, "detections": 1, "figures": json.dumps(d.figures),
        "baseline": json.dumps(d.baseline), "reproduce": d.reproduce,
        "client_project_id": d.subject.client_project_id, "server_project_id": d.subject.server_project_id,
        "version": 1,
    }  # fmt: skip


def _extend(old: dict[str, Any], d: Detection, now: float) -> dict[str, Any] | None:
    """``old`` extended by ``d``; None when ``d`` adds nothing (a re-run of a minute already folded)."""
    inside = old["time_from"] <= d.time_from and d.time_to <= old["time_to"]
    higher = severity_rank(d.severity) > severity_rank(old["severity"])
    if inside and not higher:
        return None
    figures = dict(d.figures)
    before = json.loads(old["figures"])
    for k in PEAK_KEYS:
        values = [
            v for v in (before.get(f"peak_{k}", before.get(k)), figures.get(k)) if isinstance(v, int | float)
        ]
        if values:
            figures[f"peak_{k}"] = max(values)
    return {
        **old, "severity": d.severity if higher else old["severity"], "summary": d.summary,
        "time_from": min(old["time_from"], d.time_from), "time_to": max(old["time_to"], d.time_to),
        "updated": now, "detections": int(old["detections"]) + 1, "figures": json.dumps(figures),
        "baseline": json.dumps(d.baseline), "reproduce": d.reproduce, "subject": d.subject.model_dump_json(),
        "version": int(old["version"]) + 1,
    }  # fmt: skip


def _stored(row: dict[str, Any]) -> dict[str, Any]:
    """A row as the JSONEachRow insert wants it (times as epoch numbers)."""
    return {k: row[k] for k in (
        "id", "kind", "severity", "subject_key", "subject", "summary", "time_from", "time_to", "first_detected",
        "updated", "detections", "figures", "baseline", "reproduce", "client_project_id", "server_project_id", "version",
    )}  # fmt: skip

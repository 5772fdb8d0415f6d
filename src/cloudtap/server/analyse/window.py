"""Time windows of an analysis: parsing, baselines (a window, yesterday, last week) and the rollup to read.

Times accept everything the query engine does (ISO 8601, epoch, ``now``, ``-1h``; see
:func:`cloudtap.server.query.timespec.parse_instant`). The edge rollup is chosen from the window and
the step: the coarsest of ``edge_1h`` / ``edge_1m`` / ``edge_1s`` whose interval divides the step (or
both window ends, when there is no step), that may cover the span and that holds rows in it. Request
metrics read the request rollups ``request_1s`` / ``request_1m`` / ``request_1h`` by the same rule.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from cloudtap.server.analyse._sql import NS, Params, table, time_where
from cloudtap.server.analyse.errors import AnalysisError
from cloudtap.server.query.timespec import format_duration, iso, parse_duration, parse_instant

#: Stored edge tables by interval (seconds), finest first, with the widest span one analysis may read.
EDGE_TABLES = (("edge_1s", 1, 2 * 86400), ("edge_1m", 60, 93 * 86400), ("edge_1h", 3600, 3660 * 86400))
#: Request rollups, same intervals and spans.
REQUEST_TABLES = tuple((name.replace("edge_", "request_"), width, span) for name, width, span in EDGE_TABLES)
#: Rollups of each metric family (see :func:`cloudtap.server.analyse.metrics.family_of`).
ROLLUPS = {"edge": EDGE_TABLES, "request": REQUEST_TABLES}
#: Endpoint tables, same intervals.
ENDPOINT_TABLES = {"edge_1s": "endpoint_1s", "edge_1m": "endpoint_1m", "edge_1h": "endpoint_1h"}
#: Baseline shortcuts -> shift back in ns.
BASELINE_SHIFTS = {"yesterday": 86400 * NS, "last_week": 7 * 86400 * NS}
#: Most buckets one series may have.
MAX_BUCKETS = 100_000


@dataclass(frozen=True)
class Window:
    """``[start_ns, end_ns)``."""

    start_ns: int
    end_ns: int

    @property
    def span_ns(self) -> int:
        """Width in ns."""
        return self.end_ns - self.start_ns

    @property
    def mid_ns(self) -> int:
        """Middle of the window (the moment names are looked up at)."""
        return (self.start_ns + self.end_ns) // 2

    def shifted(self, delta_ns: int) -> Window:
        """The same window ``delta_ns`` earlier."""
        return Window(self.start_ns - delta_ns, self.end_ns - delta_ns)

    def to_json(self) -> dict[str, str]:
        """``{"from": iso, "to": iso}``."""
        return {"from": iso(self.start_ns), "to": iso(self.end_ns)}


def resolve_window(time_from: Any, time_to: Any = None, now_ns: int | None = None, field: str = "time") -> Window:
    """A window from two instants (``time_to`` defaults to now).

    Raises:
        AnalysisError: an instant does not parse, or the window is empty.
    """
    now = time.time_ns() // NS * NS if now_ns is None else now_ns  # "now", "-1h": whole seconds, as rows are
    if time_from is None:
        raise AnalysisError(f"{field}_from is required", f"{field}_from")
    t0 = _instant(time_from, now, f"{field}_from")
    t1 = now if time_to is None else _instant(time_to, now, f"{field}_to")
    if t1 <= t0:
        raise AnalysisError(f"{field}_to must be after {field}_from", f"{field}_to")
    return Window(t0, t1)


def _instant(value: Any, now: int, field: str) -> int:
    try:
        return parse_instant(value, now, field)
    except AnalysisError:
        raise
    except Exception as exc:  # QueryError from timespec: same message, our type
        raise AnalysisError(str(getattr(exc, "message", exc)), field) from None


def baseline_window(window: Window, baseline: str | None, baseline_from: Any = None, baseline_to: Any = None,
                    now_ns: int | None = None) -> Window:  # fmt: skip
    """The baseline of ``window``: ``yesterday``, ``last_week``, ``before`` (the same span just before),
    or an explicit ``baseline_from`` / ``baseline_to``.

    Raises:
        AnalysisError: unknown shortcut, both or neither given, or a bad explicit window.
    """
    if baseline_from is not None:
        if baseline not in (None, "window"):
            raise AnalysisError("give baseline or baseline_from/baseline_to, not both", "baseline")
        end = baseline_to if baseline_to is not None else iso(window.start_ns)
        return resolve_window(baseline_from, end, now_ns, "baseline")
    name = (baseline or "yesterday").strip().lower().replace("-", "_").replace(" ", "_")
    if name == "before":
        return window.shifted(window.span_ns)
    if name in BASELINE_SHIFTS:
        return window.shifted(BASELINE_SHIFTS[name])
    raise AnalysisError(
        f"unknown baseline {baseline!r}", "baseline", [*BASELINE_SHIFTS, "before", "window (with baseline_from)"]
    )


def parse_step(step: str | None, field: str = "step") -> int | None:
    """A step in whole seconds (``1s``..``1d``), or None."""
    if step is None or str(step).strip() == "":
        return None
    try:
        ns = parse_duration(str(step), field)
    except AnalysisError:
        raise
    except Exception as exc:
        raise AnalysisError(str(getattr(exc, "message", exc)), field) from None
    if ns % NS or not NS <= ns <= 86400 * NS:
        raise AnalysisError(f"{field} {step} must be whole seconds between 1s and 1d", field)
    return ns // NS


def rollup_span_s(name: str) -> tuple[int, int]:
    """(interval, widest span one analysis may read) of a stored rollup, in seconds."""
    return next((w, m) for tables in ROLLUPS.values() for n, w, m in tables if n == name)


def pick_edge_table(store: Any, windows: list[Window], step_s: int | None = None,
                    field: str = "step", family: str = "edge") -> tuple[str, int]:  # fmt: skip
    """(stored rollup, its interval in s) to read ``windows`` at ``step_s``: edge rollups, or the request
    ones for ``family="request"``.

    Prefers the coarsest table whose interval divides the step (or every window end when there is no
    step) and whose span limit covers the windows; among those, one holding rows in the first window.

    Raises:
        AnalysisError: no table can serve the step or the span.
    """
    tables = ROLLUPS[family]
    span = max(w.end_ns for w in windows) - min(w.start_ns for w in windows)
    fits = []
    for name, width, max_span in reversed(tables):
        if span > max_span * NS:
            continue
        if step_s is not None and step_s % width:
            continue
        if step_s is None and any(w.start_ns % (width * NS) or w.end_ns % (width * NS) for w in windows):
            continue
        fits.append((name, width))
    if not fits and step_s is None:  # ends off every grid ("now-7d"): the finest table the span allows
        fits = [(name, width) for name, width, max_span in tables if span <= max_span * NS][:1]
    if not fits:
        if step_s is not None and step_s < 60 and span > tables[0][2] * NS:
            raise AnalysisError(
                f"a {step_s}s step reads {tables[0][0]}, which answers at most {format_duration(tables[0][2] * NS)}; "
                "narrow the window or use a step of 1m or more", field
            )  # fmt: skip
        raise AnalysisError(f"no {family} rollup serves a window of {format_duration(span)} at this step", field)
    if len(fits) == 1:
        return fits[0]
    database = getattr(store, "database", "cloudtap")
    probe = windows[0]
    for name, width in fits:
        params = Params()
        sql = f"SELECT 1 AS x FROM {table(database, name)} WHERE {time_where(probe.start_ns, probe.end_ns, params)} LIMIT 1"
        if store.query_arrow(sql, params.values).num_rows:
            return name, width
    return fits[0]


def bucket_count(window: Window, step_s: int, field: str = "step") -> int:
    """Buckets of ``step_s`` touching ``window`` (checked against :data:`MAX_BUCKETS`)."""
    first = window.start_ns // (step_s * NS)
    last = -(-window.end_ns // (step_s * NS))
    n = int(last - first)
    if n > MAX_BUCKETS:
        raise AnalysisError(f"{n} buckets of {step_s}s: at most {MAX_BUCKETS}; use a larger step", field)
    return n


def data_bounds(store: Any, name: str) -> Window | None:
    """[first row, end of the last row's interval) of a stored rollup, None when empty."""
    width, _ = rollup_span_s(name)
    sql = (
        f"SELECT toInt64(toUnixTimestamp(min(time))) AS lo, toInt64(toUnixTimestamp(max(time))) AS hi, count() AS n "
        f"FROM {table(getattr(store, 'database', 'cloudtap'), name)}"
    )
    row = store.query_arrow(sql).to_pylist()[0]
    if not row["n"]:
        return None
    return Window(int(row["lo"]) * NS, (int(row["hi"]) + width) * NS)

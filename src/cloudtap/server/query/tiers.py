"""Reading a range from several rollups: whole hours from ``*_1h``, whole minutes from ``*_1m``, the rest finer.

The engine first picks the *base* table (the precision the range asks for, see docs/query.md). An
aggregation without an explicit ``interval`` is then answered from the coarsest rollups that have every
name the query uses: the part of the range made of whole coarse intervals (and where that rollup holds
rows) is read from it, the fringes from the next finer table, down to the base. Since each rollup is the
exact sum of the finer one, the answer equals the base table's answer and costs far fewer rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from cloudtap.server.query.catalog import MAX_RANGE_NS, StoredTable, candidates
from cloudtap.server.query.model import Query
from cloudtap.server.query.table_choice import misfit
from cloudtap.server.query.timespec import parse_duration


@dataclass(frozen=True)
class Segment:
    """``[time_from_ns, time_to_ns)`` read from ``table``."""

    table: StoredTable
    time_from_ns: int
    time_to_ns: int


def coarser_tiers(query: Query, base: StoredTable) -> list[StoredTable]:
    """Rollups coarser than ``base`` that can answer ``query`` too, coarsest first (none for flows,
    raw listings and an explicit ``interval``)."""
    if query.is_raw or query.interval is not None or not base.width_ns:
        return []
    step_ns = parse_duration(query.step, "step") if query.step else None
    out = [
        t
        for t in candidates(base.logical)
        if t.width_ns > base.width_ns
        and misfit(t, query) is None
        and (step_ns is None or step_ns % t.width_ns == 0)
    ]
    return sorted(out, key=lambda t: t.width_ns, reverse=True)


def plan_segments(
    base: StoredTable,
    coarser: list[StoredTable],
    t0: int,
    t1: int,
    bounds: Mapping[str, tuple[int, int]],
) -> list[Segment]:
    """Cover ``[t0, t1)``: coarse rollups for their whole intervals where they hold rows, ``base`` for the rest.

    Args:
        base: the finest table (sets the precision of the range ends).
        coarser: from :func:`coarser_tiers`.
        t0, t1: the resolved range, ns.
        bounds: stored table -> ``[earliest, latest end)`` of its rows (tables without rows are skipped).

    Returns:
        Segments in time order, non-overlapping, covering the range exactly.
    """
    tiers = [t for t in coarser if t.name in bounds] + [base]

    def cover(lo: int, hi: int, level: int) -> list[Segment]:
        if lo >= hi:
            return []
        table = tiers[level]
        if level == len(tiers) - 1:
            return [Segment(table, lo, hi)]
        w = table.width_ns
        have_lo, have_hi = bounds[table.name]
        a = max(-(-lo // w) * w, -(-have_lo // w) * w)
        b = min(hi // w * w, have_hi // w * w)
        if a >= b or b - a > MAX_RANGE_NS[table.name]:
            return cover(lo, hi, level + 1)
        return [*cover(lo, a, level + 1), Segment(table, a, b), *cover(b, hi, level + 1)]

    return cover(t0, t1, 0)

"""Periodicity of occurrences: the dominant period, its spread and the next expected occurrence.

From the occurrence start times: the gaps between consecutive starts, each divided by its rounded
multiple of a first guess (the median gap), so one missed occurrence (a double gap) still supports
the period. The period is the median of those per-cycle gaps, the spread 1.4826 x their MAD, and
``regularity`` the fraction of gaps within max(spread, step) of a whole number of periods.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, Field

from cloudtap.server.analyse.robust import MAD_SCALE
from cloudtap.server.query.timespec import iso


class Period(BaseModel):
    """A dominant period."""

    period_s: float
    spread_s: float = Field(description="1.4826 x MAD of the per-cycle gaps")
    resolution_s: int = Field(description="bucket width: periods are measured to this")
    regularity: float = Field(description="fraction of gaps that are whole periods within the tolerance")
    cycles: int = Field(description="gaps used")
    next_expected: str = Field(description="last start + period")
    text: str = Field(description='e.g. "every 60 min ± 1 min"')


def find_period(starts_s: np.ndarray, step_s: int) -> Period | None:
    """The dominant period of ``starts_s`` (epoch seconds), None with fewer than two occurrences."""
    t = np.sort(np.asarray(starts_s, np.float64))
    if len(t) < 2:
        return None
    gaps = np.diff(t)
    gaps = gaps[gaps > 0]
    if not len(gaps):
        return None
    guess = float(np.median(gaps))
    k = np.maximum(1.0, np.round(gaps / guess))
    per = gaps / k
    period = float(np.median(per))
    spread = float(np.median(np.abs(per - period))) * MAD_SCALE
    tol = max(spread, float(step_s))
    regular = float(np.mean(np.abs(gaps - np.round(gaps / period) * period) <= tol))
    return Period(
        period_s=period, spread_s=round(spread, 3), resolution_s=int(step_s), regularity=round(regular, 3),
        cycles=int(len(gaps)), next_expected=iso(int(round((t[-1] + period) * 1e9))),
        text=f"every {_human(period)} ± {_human(max(spread, float(step_s)))}",
    )  # fmt: skip


def _human(seconds: float) -> str:
    """``3600`` -> ``60 min``; ``90`` -> ``1.5 min``; ``30`` -> ``30 s``; ``172800`` -> ``48 h``."""
    if seconds >= 3 * 3600:
        return f"{seconds / 3600:.3g} h"
    if seconds >= 60:
        return f"{seconds / 60:.3g} min"
    return f"{seconds:.3g} s"

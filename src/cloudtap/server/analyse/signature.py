"""Signatures: a traffic filter plus a condition on a per-bucket metric, written as JSON or as text.

Text conditions (``--when`` in the CLI): ``bytes>50M`` (per bucket: with a 1 min step, bytes per
minute), ``z(bytes)>4`` (robust z-score over the scanned history), ``oneway>10`` (bigger direction
over the smaller one), ``failed>=3``. Numbers take SI (``k``, ``M``, ``G``) or binary (``Ki``, ``Mi``,
``Gi``) suffixes.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cloudtap.server.analyse.errors import AnalysisError
from cloudtap.server.analyse.metrics import METRICS, check_metric
from cloudtap.server.analyse.selector import Selector

Op = Literal["gt", "ge", "lt", "le"]
_OPS = {">=": "ge", "<=": "le", ">": "gt", "<": "lt"}
_SUFFIX = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12, "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}
_COND = re.compile(r"\s*(z\(\s*([a-z_0-9]+)\s*\)|[a-z_0-9]+)\s*(>=|<=|>|<)\s*([0-9.]+(?:e[+-]?\d+)?)\s*([kmgt]i?)?b?\s*",
                   re.IGNORECASE)  # fmt: skip
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class Condition(BaseModel):
    """``metric op threshold`` per bucket (``test=zscore``: on the metric's robust z-score)."""

    model_config = ConfigDict(extra="forbid")

    metric: str = Field("bytes", description=f"one of {', '.join(METRICS)}")
    test: Literal["value", "zscore"] = "value"
    op: Op = "gt"
    threshold: float

    @field_validator("metric")
    @classmethod
    def _metric(cls, v: str) -> str:
        return check_metric(v)

    def describe(self) -> str:
        """``z(bytes) > 4``."""
        sym = {v: k for k, v in _OPS.items()}[self.op]
        lhs = f"z({self.metric})" if self.test == "zscore" else self.metric
        return f"{lhs} {sym} {self.threshold:g}"


class Signature(BaseModel):
    """A filter plus a condition, evaluated per ``step`` bucket."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, description="to save it: letters, digits, _ . -")
    description: str = Field("", max_length=1000)
    filter: Selector = Field(default_factory=Selector)
    condition: Condition
    step: str = Field("1m", description="bucket: 1s, 1m, 1h...")
    min_buckets: int = Field(1, ge=1, le=100_000, description="shortest occurrence, in buckets")
    max_gap: int = Field(0, ge=0, le=10_000, description="quiet buckets tolerated inside one occurrence")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and not NAME.fullmatch(v):
            raise ValueError(f"signature name {v!r}: 1-64 letters, digits, _ . - (starting with a letter or digit)")
        return v

    def describe(self) -> str:
        """``vm=db-01 port=873: bytes > 1e+06 per 1m``."""
        return f"{self.filter.describe()}: {self.condition.describe()} per {self.step}"


def parse_condition(text: str) -> Condition:
    """``bytes>50M``, ``z(bytes)>4``, ``oneway>=10`` -> :class:`Condition`.

    Raises:
        AnalysisError: not of that form, or an unknown metric.
    """
    m = _COND.fullmatch(text)
    if not m:
        raise AnalysisError(
            f"condition {text!r} is not 'metric OP number' (e.g. bytes>50M, z(bytes)>4, oneway>10)", "condition"
        )
    whole, zmetric, op, number, suffix = m.groups()
    metric = (zmetric or whole).lower()
    try:
        value = float(number) * _SUFFIX[(suffix or "").lower()]
    except ValueError:
        raise AnalysisError(f"condition {text!r}: {number!r} is not a number", "condition") from None
    check_metric(metric, "condition")
    return Condition(metric=metric, test="zscore" if zmetric else "value", op=_OPS[op], threshold=value)  # type: ignore[arg-type]

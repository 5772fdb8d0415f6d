"""Parsing of the human units used in scenario files: durations ("1h30m", "250ms") and ranges."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict

_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(h|ms|m|s|us|ns)")


def parse_duration(value: Any) -> float:
    """Turn ``"1h30m"``, ``"250ms"``, ``"45s"`` or a number of seconds into seconds.

    Args:
        value: a string with units h, m, s, ms, us, ns (parts may be combined) or a number.

    Returns:
        The duration in seconds (>= 0).
    """
    if isinstance(value, bool):
        raise ValueError("a duration must be a number of seconds or a string like '1h30m'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        try:
            seconds = float(text)
        except ValueError:
            pos, seconds = 0, 0.0
            for match in _PART.finditer(text):
                if match.start() != pos:
                    break
                seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
                pos = match.end()
            if pos != len(text) or not text:
                raise ValueError(
                    f"cannot read duration {value!r}: use e.g. '3h', '90m', '1h30m', '10s', '250ms'"
                ) from None
    else:
        raise ValueError("a duration must be a number of seconds or a string like '1h30m'")
    if seconds < 0:
        raise ValueError(f"duration {value!r} is negative")
    return seconds


def parse_range(value: Any) -> tuple[float, float]:
    """Turn a scalar or a ``[low, high]`` pair into a ``(low, high)`` tuple with low <= high."""
    if isinstance(value, bool):
        raise ValueError("expected a number or a [low, high] pair")
    if isinstance(value, int | float):
        return float(value), float(value)
    if isinstance(value, list | tuple) and len(value) == 2:
        low, high = (float(v) for v in value)
        if low > high:
            raise ValueError(f"range [{low:g}, {high:g}] has low > high")
        return low, high
    raise ValueError("expected a number or a [low, high] pair")


#: Seconds, written in a scenario as ``"1h30m"``, ``"250ms"`` or a plain number.
Duration = Annotated[float, BeforeValidator(parse_duration)]
#: A closed interval written as a scalar or a ``[low, high]`` pair.
Range = Annotated[tuple[float, float], BeforeValidator(parse_range)]


class SpecModel(BaseModel):
    """Base of every scenario section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=False)

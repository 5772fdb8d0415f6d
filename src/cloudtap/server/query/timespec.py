"""Time specifications of queries: durations (``90s``, ``1h30m``), instants (ISO 8601, epoch, ``-1h``).

All results are integer nanoseconds since the Unix epoch (UTC).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from cloudtap.server.query.errors import QueryError

NS_PER_S = 1_000_000_000
_UNITS = {
    "ns": 1,
    "us": 1_000,
    "ms": 1_000_000,
    "s": NS_PER_S,
    "m": 60 * NS_PER_S,
    "min": 60 * NS_PER_S,
    "h": 3600 * NS_PER_S,
    "d": 86400 * NS_PER_S,
    "w": 7 * 86400 * NS_PER_S,
}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|ms|min|s|m|h|d|w)")
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?(?:ns|us|ms|min|s|m|h|d|w))+")
_FRACTION = re.compile(r"T\d\d:\d\d:\d\d\.(\d{1,9})(?=$|[Zz+-])")
#: Keyword meaning "the whole stored range" (resolved against the data by the engine).
ALL = "all"


def parse_duration(text: str, field: str = "duration") -> int:
    """``"90s"``, ``"1h30m"``, ``"1.5h"``, ``"2d"`` -> nanoseconds (> 0).

    Raises:
        QueryError: not a duration.
    """
    s = str(text).strip().lower()
    if not _DURATION.fullmatch(s):
        raise QueryError(f"{field}: {text!r} is not a duration like 30s, 5m, 1h30m, 2d", field)
    ns = sum(round(float(num) * _UNITS[unit]) for num, unit in _PART.findall(s))
    if ns <= 0:
        raise QueryError(f"{field}: {text!r} must be longer than zero", field)
    return int(ns)


def format_duration(ns: int) -> str:
    """Nanoseconds -> the shortest exact ``1h``/``90s``/``250ms`` form."""
    for unit in ("w", "d", "h", "m", "s", "ms", "us"):
        if ns % _UNITS[unit] == 0:
            return f"{ns // _UNITS[unit]}{unit}"
    return f"{ns}ns"


def epoch_to_ns(value: float) -> int:
    """An epoch number -> ns, its unit guessed from its size (s, ms, us or ns)."""
    magnitude = abs(value)
    if magnitude < 1e11:
        return int(round(value * NS_PER_S))
    if magnitude < 1e14:
        return int(round(value * 1_000_000))
    if magnitude < 1e17:
        return int(round(value * 1_000))
    return int(value)


def parse_instant(value: str | int | float | datetime, now_ns: int, field: str = "time") -> int:
    """One point in time -> ns since the epoch.

    Args:
        value: ISO 8601 (``2024-05-01T12:00:00Z``; naive means UTC), an epoch number (s, ms, us or ns,
            told apart by size), ``now``, or relative to now (``-1h``, ``now-90s``).
        now_ns: the current time.
        field: named in errors.

    Raises:
        QueryError: the value is none of these.
    """
    if isinstance(value, datetime):
        dt = value if value.tzinfo else value.replace(tzinfo=UTC)
        return _datetime_ns(dt)
    if isinstance(value, bool):
        raise QueryError(f"{field}: {value!r} is not a time", field)
    if isinstance(value, int | float):
        return epoch_to_ns(value)
    s = str(value).strip()
    low = s.lower()
    if low == "now":
        return now_ns
    if low.startswith("now-"):
        return now_ns - parse_duration(low[4:], field)
    if low.startswith("-") and _DURATION.fullmatch(low[1:]):
        return now_ns - parse_duration(low[1:], field)
    if re.fullmatch(r"-?\d+(\.\d+)?", s):
        return epoch_to_ns(int(s) if "." not in s else float(s))
    text = s.replace(" ", "T", 1) if "T" not in s and " " in s else s
    fraction = 0
    m = _FRACTION.search(text)
    if m:  # datetime keeps microseconds only: take the fraction (up to ns) apart
        fraction = int(m.group(1).ljust(9, "0"))
        text = text[: m.start(1) - 1] + text[m.end(1) :]
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise QueryError(
            f"{field}: {value!r} is not a time; use ISO 8601, epoch seconds/ms/ns, 'now' or '-1h'", field
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return _datetime_ns(dt) + fraction


def _datetime_ns(dt: datetime) -> int:
    delta = dt - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * NS_PER_S + delta.microseconds * 1_000


def iso(ns: int) -> str:
    """ns since the epoch -> ``2024-05-01T12:00:00.123456789Z`` (fraction only when non-zero)."""
    sec, frac = divmod(int(ns), NS_PER_S)
    base = datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{frac:09d}Z" if frac else base + "Z"

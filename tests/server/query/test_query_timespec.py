"""Durations and instants of queries."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cloudtap.server.query.errors import QueryError
from cloudtap.server.query.timespec import epoch_to_ns, format_duration, iso, parse_duration, parse_instant

NS = 1_000_000_000
NOW = 1_700_000_000 * NS


@pytest.mark.parametrize(
    ("text", "ns"),
    [("1s", NS), ("90s", 90 * NS), ("5m", 300 * NS), ("1h30m", 5400 * NS), ("1.5h", 5400 * NS), ("2d", 172800 * NS),
     ("1w", 604800 * NS), ("250ms", 250_000_000), ("3min", 180 * NS), (" 1H ", 3600 * NS)],
)  # fmt: skip
def test_parse_duration(text: str, ns: int) -> None:
    assert parse_duration(text) == ns


@pytest.mark.parametrize("text", ["", "h", "1", "-1h", "1y", "1h;DROP", "0s", "1 h"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(QueryError):
        parse_duration(text)


def test_format_duration_round_trips() -> None:
    for text in ("1s", "90s", "5m", "1h", "1d", "1w", "250ms"):
        assert parse_duration(format_duration(parse_duration(text))) == parse_duration(text)
    assert format_duration(3600 * NS) == "1h"


def test_epoch_units_told_apart_by_size() -> None:
    assert epoch_to_ns(1_700_000_000) == NOW
    assert epoch_to_ns(1_700_000_000_000) == NOW
    assert epoch_to_ns(1_700_000_000_000_000) == NOW
    assert epoch_to_ns(NOW) == NOW
    assert epoch_to_ns(1_700_000_000.5) == NOW + NS // 2


@pytest.mark.parametrize(
    ("value", "ns"),
    [
        ("now", NOW),
        ("-1h", NOW - 3600 * NS),
        ("now-90s", NOW - 90 * NS),
        ("2023-11-14T22:13:20Z", NOW),
        ("2023-11-14T22:13:20+00:00", NOW),
        ("2023-11-14T23:13:20+01:00", NOW),
        ("2023-11-14 22:13:20", NOW),  # naive: UTC
        ("2023-11-14T22:13:20.5Z", NOW + NS // 2),
        ("1700000000", NOW),
        (1_700_000_000_000, NOW),
        (NOW, NOW),
        (datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC), NOW),
        ("1970-01-01T00:00:00Z", 0),
    ],
)
def test_parse_instant(value: object, ns: int) -> None:
    assert parse_instant(value, NOW) == ns  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["yesterday", "-1x", "2023-13-01", "now+1h", True, "1h'--"])
def test_parse_instant_rejects(value: object) -> None:
    with pytest.raises(QueryError) as info:
        parse_instant(value, NOW, "time_from")  # type: ignore[arg-type]
    assert info.value.field == "time_from"


def test_iso() -> None:
    assert iso(NOW) == "2023-11-14T22:13:20Z"
    assert iso(NOW + 5) == "2023-11-14T22:13:20.000000005Z"
    assert parse_instant(iso(NOW + 123_456_789), 0) == NOW + 123_456_789

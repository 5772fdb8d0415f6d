"""The numba formatters against Python's own text of numbers and addresses."""

from __future__ import annotations

import io
import ipaddress
import json

import numpy as np

from cloudtap.meter.writers.jsonl import write_jsonl
from cloudtap.meter.writers.text import address_column, enum_column
from cloudtap.schema.flow import FLOW_DTYPE

RNG = np.random.default_rng(7)


def texts(col_data: np.ndarray, offsets: np.ndarray) -> list[str]:
    raw = col_data.tobytes().decode("ascii")
    return [raw[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]


def jsonl_rows(flows: np.ndarray) -> list[dict[str, object]]:
    buf = io.BytesIO()
    write_jsonl(flows, buf)
    return [json.loads(line) for line in buf.getvalue().decode().splitlines()]


def test_floats_read_as_python_writes_them() -> None:
    values = np.concatenate([
        RNG.integers(-1, 10**9, 4000) / 1000.0,  # RTTs: ns / 1000
        RNG.random(2000) * 10.0 ** RNG.integers(-8, 18, 2000),  # every magnitude, fixed and exponent
        RNG.standard_normal(2000),
        np.array([0.0, -0.0, -1.0, 1e-4, 9.999e-5, 1e16, 9999999999999998.0, 2.0**53, 0.1, 1 / 3, 5e-324,
                  1.7976931348623157e308, np.nan, np.inf, -np.inf, 123456789.125]),
    ])  # fmt: skip
    flows = np.zeros(len(values), FLOW_DTYPE)
    flows["rtt_client_us"] = values
    flows["rtt_server_us"] = values[::-1]
    buf = io.BytesIO()
    write_jsonl(flows, buf)
    lines = buf.getvalue().decode().splitlines()
    for line, a, b in zip(lines, values, values[::-1], strict=True):
        assert f'"rtt_client_us":{json.dumps(float(a))},' in line
        assert f'"rtt_server_us":{json.dumps(float(b))},' in line


def test_integers_at_the_limits() -> None:
    flows = np.zeros(3, FLOW_DTYPE)
    flows["flow_id"] = [0, 2**64 - 1, 10**19]
    flows["start_ns"] = [-(2**63), 2**63 - 1, -1]
    rows = jsonl_rows(flows)
    assert [r["flow_id"] for r in rows] == [0, 2**64 - 1, 10**19]
    assert [r["start_ns"] for r in rows] == [-(2**63), 2**63 - 1, -1]


def test_ipv6_text_is_rfc5952_as_ipaddress_writes_it() -> None:
    n = 5000
    groups = RNG.integers(0, 0x10000, (n, 8), dtype=np.uint64)
    groups[RNG.random((n, 8)) < 0.5] = 0  # zero runs of every length and position
    hi = (groups[:, 0] << 48) | (groups[:, 1] << 32) | (groups[:, 2] << 16) | groups[:, 3]
    lo = (groups[:, 4] << 48) | (groups[:, 5] << 32) | (groups[:, 6] << 16) | groups[:, 7]
    hi[:3], lo[:3] = 0, [0, 1, 0x0000_FFFF_0A00_0001]  # ::, ::1, IPv4-mapped 10.0.0.1
    col = address_column(hi, lo)
    expected = [
        str(ipaddress.IPv4Address(int(b) & 0xFFFFFFFF))
        if int(a) == 0 and int(b) >> 32 == 0xFFFF
        else str(ipaddress.IPv6Address((int(a) << 64) | int(b)))
        for a, b in zip(hi, lo, strict=True)
    ]
    assert texts(col.data, col.offsets) == expected
    assert expected[:3] == ["::", "::1", "10.0.0.1"]


def test_ipv4_text() -> None:
    v4 = RNG.integers(0, 2**32, 3000, dtype=np.uint64)
    v4[:2] = [0, 2**32 - 1]
    col = address_column(np.zeros_like(v4), v4 | np.uint64(0x0000_FFFF_0000_0000))
    assert texts(col.data, col.offsets) == [str(ipaddress.IPv4Address(int(v))) for v in v4]


def test_enum_names_and_unknown() -> None:
    col = enum_column(np.array([0, 2, 1, 9, 3], dtype=np.uint8), ("", "a", "bcd"))
    assert texts(col.data, col.offsets) == ["", "bcd", "a", "unknown", "unknown"]

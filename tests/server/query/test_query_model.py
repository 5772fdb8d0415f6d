"""The query model: text forms of filters, metrics and sort keys; structural validation."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from cloudtap.server.query.errors import QueryError
from cloudtap.server.query.model import DEFAULT_LIMIT, MAX_LIMIT, Filter, MetricSpec, OrderBy, Query


@pytest.mark.parametrize(
    ("text", "dim", "op", "value"),
    [
        ("server_port=5432", "server_port", "eq", 5432),
        ("proto!=udp", "proto", "ne", "udp"),
        ("server_port=80,443", "server_port", "in", [80, 443]),
        ("server_port!=80, 443", "server_port", "not_in", [80, 443]),
        ("client_ip~10.0.0.0/8", "client_ip", "prefix", "10.0.0.0/8"),
        ("client_ip=10.0.0.0/8", "client_ip", "prefix", "10.0.0.0/8"),
        ("bytes_c2s>1000", "bytes_c2s", "gt", 1000),
        ("bytes_c2s>=1000", "bytes_c2s", "ge", 1000),
        ("rtt_client_us<=2.5", "rtt_client_us", "le", "2.5"),
        ("vm_domain=a=b", "vm_domain", "eq", "a=b"),
        (" agent_id = edge-1 ", "agent_id", "eq", "edge-1"),
        ("client_ip=fd00::1", "client_ip", "eq", "fd00::1"),
    ],
)
def test_filter_parse(text: str, dim: str, op: str, value: object) -> None:
    f = Filter.parse(text)
    assert (f.dim, f.op, f.value) == (dim, op, value)


@pytest.mark.parametrize(
    "text",
    ["server_port", "=5", "server_port=", "server_port>1,2", "Bad-Name=1", "a b=1", "x=" + "1," * 1001],
)
def test_filter_parse_rejects(text: str) -> None:
    with pytest.raises(QueryError) as info:
        Filter.parse(text)
    assert info.value.field == "filters"


def test_filter_values_are_checked() -> None:
    with pytest.raises(ValidationError):
        Filter(dim="agent_id", value="a\tb")  # control characters never reach a parameter
    with pytest.raises(ValidationError):
        Filter(dim="agent_id", value="x" * 300)
    with pytest.raises(ValidationError):
        Filter(dim="agent_id", op="in", value=[])
    with pytest.raises(ValidationError):
        Filter(dim="agent_id", op="eq", value=[1, 2])
    with pytest.raises(ValidationError):
        Filter(dim="client_ip' OR 1=1", value="x")
    with pytest.raises(ValidationError):
        Filter(dim="agent_id", value=True)
    assert Filter(dim="agent_id", op="in", value="a").value == ["a"]
    assert Filter(dim="agent_id", op="eq", value=["a"]).value == "a"


@pytest.mark.parametrize(
    ("text", "name", "agg", "column"),
    [
        ("bytes", "bytes", None, "bytes"),
        ("bytes_c2s", "bytes_c2s", None, "bytes_c2s"),
        ("bytes_rate", "bytes", "rate", "bytes_rate"),
        ("rtt_mean", "rtt", "mean", "rtt_mean"),
        ("rtt_p95", "rtt", "p95", "rtt_p95"),
        ("rtt_p99_9", "rtt", "p99.9", "rtt_p99_9"),
        ("bytes:p50", "bytes", "p50", "bytes_p50"),
        ("unique(client_ip)", "client_ip", "uniq", "uniq_client_ip"),
        ("uniq(server_ip)", "server_ip", "uniq", "uniq_server_ip"),
        ("flows_failed", "flows_failed", None, "flows_failed"),
        ("packets_max", "packets", "max", "packets_max"),
    ],
)
def test_metric_shorthand(text: str, name: str, agg: str | None, column: str) -> None:
    m = MetricSpec.model_validate(text)
    assert (m.name, m.agg, m.column) == (name, agg, column)


@pytest.mark.parametrize("body", [{"name": "bytes", "agg": "median"}, {"name": "bytes", "agg": "p100"},
                                  {"name": "bytes", "agg": "p0"}, {"name": "by tes"}, "bytes:sum(1)"])  # fmt: skip
def test_metric_rejects(body: object) -> None:
    with pytest.raises(ValidationError):
        MetricSpec.model_validate(body)


def test_order_by_text() -> None:
    assert OrderBy.model_validate("-bytes") == OrderBy(name="bytes", desc=True)
    assert OrderBy.model_validate("+bytes") == OrderBy(name="bytes", desc=False)
    assert OrderBy.model_validate("bytes asc") == OrderBy(name="bytes", desc=False)
    assert OrderBy.model_validate("bytes") == OrderBy(name="bytes", desc=True)
    with pytest.raises(ValidationError):
        OrderBy.model_validate("bytes sideways")
    with pytest.raises(ValidationError):
        OrderBy.model_validate("bytes; DROP TABLE x")


def test_query_structure() -> None:
    q = Query(time_from="-1h", metrics=["bytes"])
    assert q.row_limit == DEFAULT_LIMIT and not q.is_raw
    assert Query(time_from="-1h", metrics=["bytes"], step="1m").row_limit == MAX_LIMIT
    assert Query(time_from="-1h").is_raw
    bad = [
        {"time_from": "-1h", "limit": MAX_LIMIT + 1},
        {"time_from": "-1h", "limit": 0},
        {"time_from": "-1h", "table": "packets"},
        {"time_from": "-1h", "interval": "5m"},
        {"time_from": "-1h", "metrics": ["bytes", "bytes"]},
        {"time_from": "-1h", "group_by": ["client_ip", "client_ip"]},
        {"time_from": "-1h", "columns": ["first"], "metrics": ["bytes"]},
        {"time_from": "-1h", "step": "1m"},
        {"time_from": "-1h", "unknown_field": 1},
        {"metrics": ["bytes"]},  # the range is required
    ]
    for body in bad:
        with pytest.raises(ValidationError):
            Query.model_validate(body)

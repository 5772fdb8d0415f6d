"""The query model: one general :class:`Query` (the API body) and the text forms the CLI and GET routes use.

Structure is checked here (types, ops, limits); names are checked against the catalog when the query is
compiled (:func:`cloudtap.server.query.sql.compile_query`), which knows the table.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cloudtap.server.query.errors import QueryError

#: Largest ``limit`` of any query (rows returned).
MAX_LIMIT = 10_000
#: Default ``limit``.
DEFAULT_LIMIT = 100
#: Values of one ``in`` / ``not_in`` filter.
MAX_IN_VALUES = 1_000

Op = Literal["eq", "ne", "in", "not_in", "prefix", "gt", "lt", "ge", "le"]
Scalar = int | float | str
_AGG = re.compile(r"sum|rate|mean|min|max|uniq|p(\d{1,2}(?:\.\d{1,3})?)")
_TEXT_OPS = (("!=", "ne"), (">=", "ge"), ("<=", "le"), ("~", "prefix"), ("=", "eq"), (">", "gt"), ("<", "lt"))
_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
#: Metric names that end like an aggregation but are not one (``error_rate`` is no rate of ``error``).
WHOLE_METRIC_NAMES = frozenset({"error_rate"})


def _check_name(value: str, what: str) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ValueError(f"{what} {value!r} is not a name (lower case letters, digits, _)")
    return value


def _check_scalar(value: Any) -> Scalar:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"filter value {value!r} must be a number or a string")
    if isinstance(value, str) and (len(value) > 256 or any(ord(c) < 32 or ord(c) == 127 for c in value)):
        raise ValueError("filter text values are at most 256 printable characters")
    return value


class Filter(BaseModel):
    """``dim op value``: ``{"dim": "server_port", "op": "in", "value": [80, 443]}``.

    ``prefix`` is a CIDR (``10.0.0.0/8``) on addresses and a text prefix on other text dimensions.
    """

    model_config = ConfigDict(extra="forbid")

    dim: str
    op: Op = "eq"
    value: Scalar | list[Scalar]

    @field_validator("dim")
    @classmethod
    def _dim(cls, v: str) -> str:
        return _check_name(v, "dimension")

    @field_validator("value", mode="before")
    @classmethod
    def _no_bool(cls, v: Any) -> Any:
        if isinstance(v, bool) or (isinstance(v, list) and any(isinstance(x, bool) for x in v)):
            raise ValueError("filter values are numbers or text, not booleans")
        return v

    @model_validator(mode="after")
    def _shape(self) -> Filter:
        if self.op in ("in", "not_in"):
            values = self.value if isinstance(self.value, list) else [self.value]
            if not values or len(values) > MAX_IN_VALUES:
                raise ValueError(f"'{self.op}' takes 1 to {MAX_IN_VALUES} values")
            self.value = [_check_scalar(v) for v in values]
        elif isinstance(self.value, list):
            if len(self.value) != 1:
                raise ValueError(f"'{self.op}' takes one value; use 'in' for a list")
            self.value = _check_scalar(self.value[0])
        else:
            self.value = _check_scalar(self.value)
        return self

    @classmethod
    def parse(cls, text: str) -> Filter:
        """``server_port=5432``, ``proto!=udp``, ``server_port=80,443`` (in), ``client_ip~10.0.0.0/8``,
        ``client_ip=10.0.0.0/8`` (a CIDR value means prefix), ``bytes>1000`` style comparisons.

        Raises:
            QueryError: not of the form ``dim OP value``.
        """
        for token, op in _TEXT_OPS:
            dim, sep, value = text.partition(token)
            if sep and dim.strip() and not any(t in dim for t, _ in _TEXT_OPS):
                dim, value = dim.strip(), value.strip()
                values: list[Scalar] = [_coerce_text(v.strip()) for v in value.split(",")] if value else []
                if not values:
                    break
                if len(values) > 1:
                    if op not in ("eq", "ne"):
                        raise QueryError(f"filter {text!r}: a list of values needs = or !=", "filters")
                    op = "in" if op == "eq" else "not_in"
                    return _build_filter(dim, op, values, text)
                value0 = values[0]
                if op == "eq" and isinstance(value0, str) and "/" in value0:
                    op = "prefix"
                return _build_filter(dim, op, value0, text)
        raise QueryError(
            f"filter {text!r} is not 'dim OP value' (OP one of =, !=, >, <, >=, <=, ~; a,b,c for a list)",
            "filters",
        )


def _build_filter(dim: str, op: str, value: Scalar | list[Scalar], text: str) -> Filter:
    try:
        return Filter(dim=dim, op=op, value=value)  # type: ignore[arg-type]
    except ValueError as exc:
        raise QueryError(f"filter {text!r}: {_first_error(exc)}", "filters") from None


def _coerce_text(value: str) -> Scalar:
    if re.fullmatch(r"-?\d{1,19}", value):
        return int(value)
    return value


def _first_error(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        items = errors()
        if items:
            return str(items[0].get("msg", exc)).removeprefix("Value error, ")
    return str(exc)


class MetricSpec(BaseModel):
    """One output metric: a catalog metric (or, with ``uniq``, a dimension) and an aggregation.

    A string is accepted as shorthand: ``bytes`` (its default aggregation), ``bytes_rate``, ``rtt_mean``,
    ``rtt_p95``, ``uniq(client_ip)`` / ``unique(client_ip)``, ``bytes:rate``.
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    agg: str | None = Field(None, description="sum | rate | mean | min | max | uniq | pNN (e.g. p95, p99.9)")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, str):
            return parse_metric_text(data)
        return data

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name(v, "metric")

    @field_validator("agg")
    @classmethod
    def _agg(cls, v: str | None) -> str | None:
        if v is None:
            return v
        v = v.strip().lower()
        m = _AGG.fullmatch(v)
        if not m:
            raise ValueError(
                f"aggregation {v!r} is not one of sum, rate, mean, min, max, uniq, pNN (p50, p99.9)"
            )
        if m.group(1) is not None and not 0 < float(m.group(1)) < 100:
            raise ValueError(f"percentile {v!r} must be between p0 and p100 (exclusive)")
        return v

    @property
    def column(self) -> str:
        """The output column name (``bytes``, ``bytes_rate``, ``rtt_p95``, ``uniq_client_ip``)."""
        if self.agg in (None, "sum"):
            return self.name
        if self.agg == "uniq":
            return f"uniq_{self.name}"
        return f"{self.name}_{self.agg.replace('.', '_')}"


def parse_metric_text(text: str) -> dict[str, Any]:
    """Shorthand metric text -> ``{"name", "agg"}`` (see :class:`MetricSpec`)."""
    s = text.strip().lower()
    m = re.fullmatch(r"(?:uniq|unique)\((\w+)\)", s)
    if m:
        return {"name": m.group(1), "agg": "uniq"}
    if ":" in s:
        name, _, agg = s.partition(":")
        return {"name": name, "agg": agg}
    if s in WHOLE_METRIC_NAMES:
        return {"name": s, "agg": None}
    m = re.fullmatch(r"(\w+?)_(rate|mean|min|max|p\d{1,2}(?:_\d{1,3})?)", s)
    if m:
        return {"name": m.group(1), "agg": m.group(2).replace("_", ".")}
    return {"name": s, "agg": None}


class OrderBy(BaseModel):
    """Sort key: an output column (dimension, metric column or ``time``). Text: ``-bytes`` / ``bytes desc``."""

    model_config = ConfigDict(extra="forbid")

    name: str
    desc: bool = True

    @model_validator(mode="before")
    @classmethod
    def _text(cls, data: Any) -> Any:
        if isinstance(data, str):
            s = data.strip()
            if s.startswith("-"):
                return {"name": s[1:], "desc": True}
            if s.startswith("+"):
                return {"name": s[1:], "desc": False}
            name, _, direction = s.partition(" ")
            direction = direction.strip().lower()
            if direction not in ("", "asc", "desc"):
                raise ValueError(f"order {data!r}: direction must be asc or desc")
            return {"name": name, "desc": direction != "asc"}
        return data

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name(v, "order_by column")


class Query(BaseModel):
    """The general query (``POST /api/v1/query``).

    Without metrics and group_by it lists raw rows (flow records, edges...); otherwise it groups by
    ``group_by`` (and by ``time`` buckets of ``step`` when given) and computes ``metrics``.
    """

    model_config = ConfigDict(extra="forbid")

    table: Literal["flows", "edges", "endpoints", "requests", "request_log"] | None = Field(
        None,
        description="flows (records), edges, endpoints, requests (request rollups) or request_log (request "
        "records); default: the first of edges, flows, endpoints, requests, request_log with every name used",
    )
    interval: Literal["1s", "1m", "1h"] | None = Field(
        None,
        description="edges/endpoints/requests rollup to read; chosen from the range and step when omitted",
    )
    time_from: str | int | float = Field(
        ..., description="ISO 8601, epoch (s/ms/us/ns), 'now', relative ('-1h'), or 'all' (earliest stored)"
    )
    time_to: str | int | float | None = Field(
        None, description="as time_from; default now ('all' ranges end at the latest stored row)"
    )
    filters: list[Filter] = Field(default_factory=list, max_length=64)
    group_by: list[str] = Field(default_factory=list, max_length=16)
    metrics: list[MetricSpec] = Field(default_factory=list, max_length=32)
    columns: list[str] | None = Field(None, max_length=128, description="raw listing only: columns to return")
    order_by: list[OrderBy] = Field(default_factory=list, max_length=8)
    limit: int | None = Field(
        None,
        ge=1,
        le=MAX_LIMIT,
        description=f"rows returned; default {DEFAULT_LIMIT} ({MAX_LIMIT} for a series)",
    )
    step: str | None = Field(None, description="time bucket of a series: 1s .. 1d")
    top_groups: int | None = Field(
        None, ge=1, le=1000, description="series with group_by: keep the groups biggest by the first metric"
    )

    @field_validator("group_by", "columns")
    @classmethod
    def _names(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        if len(set(v)) != len(v):
            raise ValueError("names must not repeat")
        return [_check_name(n, "dimension") for n in v]

    @model_validator(mode="after")
    def _shape(self) -> Query:
        if self.columns is not None and (self.metrics or self.group_by or self.step):
            raise ValueError("columns is for raw listings; drop it or drop metrics/group_by/step")
        if self.step and not self.metrics:
            raise ValueError("a series (step) needs at least one metric")
        names = [m.column for m in self.metrics]
        if len(set(names)) != len(names):
            raise ValueError("metrics must not repeat")
        return self

    @property
    def row_limit(self) -> int:
        """``limit``, or its default (larger for a series, whose rows are buckets)."""
        if self.limit is not None:
            return self.limit
        return MAX_LIMIT if self.step else DEFAULT_LIMIT

    @property
    def is_raw(self) -> bool:
        """A listing of stored rows (no aggregation)."""
        return not self.metrics and not self.group_by

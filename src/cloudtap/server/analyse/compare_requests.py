"""Per-key statistics of a compare on a request metric, read from the request rollups.

Edges are (client, server [, server port, application protocol]) at the level; endpoints are the
servers (the services: a node's latency is the one it serves). Per key, like
:mod:`cloudtap.server.analyse.change_stats`: the metric over window A, over the baseline B, and the
baseline's median, MAD and mean absolute deviation over its buckets. Unlike bytes, latencies and the
error rate are not sums: A's value is the metric of all A's requests at once (percentiles from the
t-digests merged over the window), and the baseline distribution holds only the buckets that have a value
(with answered requests, for latencies). ``requests`` and ``errors`` add up, and their idle buckets count
as zeros, as for bytes.

Three queries (A by key, B by key, B by key and bucket), joined by key with Arrow: request edges are
services, far fewer than flow edges.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from cloudtap.server.analyse._sql import Params, ip_text, table, time_where
from cloudtap.server.analyse.change_stats import Part
from cloudtap.server.analyse.metrics import REQUEST_METRIC_SQL, is_additive
from cloudtap.server.analyse.request_aggregate import RequestAggregate
from cloudtap.server.store.ddl import ident

#: Builds the filter conditions into a query's parameters.
WhereOf = Callable[[Params], list[str]]
STATS = ("a_total", "b_total", "b_median", "b_mad", "b_meanad")


def request_keys(
    level: str, by_port: bool, endpoint: bool
) -> tuple[list[tuple[str, str]], list[tuple[str, str, str]]]:
    """(keys, extra) of an edge, or of a server endpoint, at ``level``."""
    sides = [("server", "src")] if endpoint else [("client", "src"), ("server", "dst")]
    keys: list[tuple[str, str]] = []
    extra: list[tuple[str, str, str]] = []
    for side, alias in sides:
        if level == "ip":
            keys.append((ip_text(f"{side}_ip"), alias))
            extra.append((f"max({side}_vm_id)", "max({a})", f"{alias}_vm"))
        else:
            keys.append((ident(f"{side}_{level}_id"), alias))
    if by_port and not endpoint:
        keys += [("server_port", "server_port"), ("toString(l7_proto)", "l7_proto")]
    return keys, extra


def _metric_query(database: str, part: Part, keys: list[tuple[str, str]], extra: list[tuple[str, str, str]],
                  metric: str, where_of: WhereOf, dedup: bool, step_s: int | None) -> tuple[str, Params]:  # fmt: skip
    params = Params()
    where = [time_where(part.start_ns, part.end_ns, params), *where_of(params)]
    agg = RequestAggregate(table(database, part.stored), keys, where, step_s, dedup, extra)
    return f"SELECT *, toFloat64({REQUEST_METRIC_SQL[metric]}) AS _v FROM ({agg.sql()})", params


def _valid_sql(metric: str) -> str:
    if is_additive(metric):
        return "1"
    return "requests > 0" if metric == "error_rate" else "answered > 0"


def request_stats(store: Any, level: str, by_port: bool, endpoint: bool, metric: str, a: Part, b: Part, nb: int,
                  where_of: WhereOf, dedup: bool = True) -> pa.Table:  # fmt: skip
    """One row per key: key columns (``src`` [, ``dst``, ``server_port``, ``l7_proto``], ``*_vm`` at the ip
    level) and ``a_total``, ``b_total``, ``b_median``, ``b_mad``, ``b_meanad``."""
    keys, extra = request_keys(level, by_port, endpoint)
    names = [k for _, k in keys]
    db = store.database
    totals = []
    for part, column in ((a, "a_total"), (b, "b_total")):
        sql, params = _metric_query(db, part, keys, extra, metric, where_of, dedup, None)
        t = store.query_arrow(f"SELECT {', '.join(names + [x for _, _, x in extra])}, _v AS {column} FROM ({sql})",
                              params.values)  # fmt: skip
        totals.append(t)
    sql, params = _metric_query(db, b, keys, [], metric, where_of, dedup, b.step_s)
    pad = (
        f"arrayWithConstant(toUInt64(greatest({int(nb)} - count(), 0)), toFloat64(0))"
        if is_additive(metric)
        else "[]"
    )
    dist = store.query_arrow(
        f"SELECT {', '.join(names)}, arrayReduce('quantileExact', _b) AS b_median, "
        f"arrayReduce('quantileExact', arrayMap(x -> abs(x - b_median), _b)) AS b_mad, "
        f"arrayAvg(arrayMap(x -> abs(x - b_median), _b)) AS b_meanad FROM ("
        f"SELECT {', '.join(names)}, arrayConcat(groupArray(_v), {pad}) AS _b FROM ({sql}) "
        f"WHERE {_valid_sql(metric)} GROUP BY {', '.join(names)})", params.values,
    )  # fmt: skip
    return _joined(totals[0], totals[1], dist, names, [x for _, _, x in extra])


def _joined(ta: pa.Table, tb: pa.Table, dist: pa.Table, keys: list[str], extra: list[str]) -> pa.Table:
    """A and B full outer joined on the keys, the baseline distribution left joined; missing stats 0."""
    both = ta.join(tb, keys, join_type="full outer", left_suffix="", right_suffix="_b", coalesce_keys=True)
    for x in extra:
        both = both.set_column(both.schema.get_field_index(x), x, pc.coalesce(both[x], both[f"{x}_b"]))
        both = both.drop_columns([f"{x}_b"])
    out = both.join(dist, keys, join_type="left outer", coalesce_keys=True)
    for s in STATS:
        out = out.set_column(out.schema.get_field_index(s), s, pc.fill_null(out[s].cast(pa.float64()), 0.0))
    return out.sort_by([(k, "ascending") for k in keys])

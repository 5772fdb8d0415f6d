"""Per-key statistics of a compare, edges and endpoints in one ClickHouse query.

For window A and the baseline B (each read from its own edge table at its own bucket), per edge and per
endpoint: the metric total in A, in B, and the baseline's exact median, MAD and mean absolute deviation
over its ``nb`` buckets, idle buckets (zeros) included. Only one row per key comes back.

How the query stays cheap at 10,000s of edges (each step measured, see docs/analysis.md "Speed"):

* Rows are grouped by a 64-bit hash of the edge key (``cityHash64`` of the addresses, ids, port,
  protocol) and the bucket: a fixed-width key keeps ClickHouse on its fast hash tables, where two IPv6
  addresses plus ids fall back to serialized keys (3-4x slower). Key values are not carried through the
  big groupings; a small key table (one row per edge) is joined back at the end. Two keys sharing a hash
  would be merged: with n keys the odds are about n² / 2^65 (3e-10 for 100,000 edges).
* Dedup (traffic seen by two agents counted once): per edge and bucket, the busiest agent's sum.
* Endpoints come from the same deduplicated edge buckets: each edge bucket counts for its client and its
  server endpoint (``ARRAY JOIN``), so the source rows are read once for both answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from cloudtap.server.analyse._sql import Params, bucket_sql, ip_text, table, time_where

#: Hash of an edge key / an endpoint key.
KEY_HASH = "cityHash64"


@dataclass
class StatKey:
    """One key column of an edge."""

    expr: str  #: stored column (or SQL over one row)
    alias: str  #: name in the answer
    kind: str  #: ip (shown as text) | int
    side: int | None = None  #: 0 client / 1 server side of an endpoint key; None: edge only


@dataclass
class Part:
    """One window of the compare: rows of ``stored`` in ``[start_ns, end_ns)`` at ``step_s`` buckets."""

    stored: str
    start_ns: int
    end_ns: int
    step_s: int


def _endpoint_pairs(keys: list[StatKey]) -> list[tuple[StatKey, StatKey]]:
    """(client key, server key) pairs making an endpoint key (e.g. (src, dst), (src_vm, dst_vm))."""
    client = [k for k in keys if k.side == 0]
    server = [k for k in keys if k.side == 1]
    return list(zip(client, server, strict=True))


def stats_sql(database: str, keys: list[StatKey], metric_sql: str, a: Part, b: Part, nb: int,
              where: list[str], params: Params, dedup: bool = True) -> str:  # fmt: skip
    """The query: one row per edge (``kind`` 0) and per endpoint (``kind`` 1; its client and server roles).

    Args:
        database: the store's database.
        keys: edge key columns; endpoint keys are the ``side`` 0 ones (or their ``side`` 1 twins).
        metric_sql: the metric over one edge row.
        a: window A. b: the baseline.
        nb: buckets of the baseline (missing ones count as zeros).
        where: filter conditions already bound in ``params``.
        params: bound parameters.
        dedup: count traffic seen by two agents once.
    """
    h = f"{KEY_HASH}({', '.join(k.expr for k in keys)})"

    def source(p: Part) -> str:
        conds = " AND ".join([time_where(p.start_ns, p.end_ns, params), *where])
        return f"{table(database, p.stored)} WHERE {conds}"

    def buckets(p: Part, flag: int) -> str:
        bucket = bucket_sql(p.step_s)
        if not dedup:
            return (f"SELECT {h} AS _h, {bucket} AS bucket, toFloat64(sum({metric_sql})) AS _v, {flag} AS _isb "
                    f"FROM {source(p)} GROUP BY _h, bucket")  # fmt: skip
        inner = f"SELECT {h} AS _h, {bucket} AS bucket, sum({metric_sql}) AS _s FROM {source(p)} GROUP BY _h, bucket, cityHash64(agent_id)"
        return (
            f"SELECT _h, bucket, toFloat64(max(_s)) AS _v, {flag} AS _isb FROM ({inner}) GROUP BY _h, bucket"
        )

    pairs = _endpoint_pairs(keys)
    rows = ", ".join(f"{k.expr} AS _d_{k.alias}" for k in keys)
    key_rows = " UNION ALL ".join(f"SELECT {h} AS _h, {rows} FROM {source(p)}" for p in (a, b))
    key_table = f"SELECT _h, {', '.join(f'any(_d_{k.alias}) AS _d_{k.alias}' for k in keys)} FROM ({key_rows}) GROUP BY _h"
    side_hash = [f"{KEY_HASH}({', '.join(f'_d_{pair[s].alias}' for pair in pairs)})" for s in (0, 1)]
    hashes = f"SELECT _h, {side_hash[0]} AS _e1, {side_hash[1]} AS _e2 FROM ({key_table})"
    per_bucket = (
        f"SELECT least(_side, 1) AS _kind, [p._h, k._e1, k._e2][_side + 1] AS _k, bucket, _isb, sum(_v) AS _v "
        f"FROM ({buckets(a, 0)} UNION ALL {buckets(b, 1)}) AS p INNER JOIN ({hashes}) AS k USING _h "
        f"ARRAY JOIN [0, 1, 2] AS _side GROUP BY _kind, _k, bucket, _isb"
    )
    n = params.bind(nb, "Int64")
    per_key = (
        f"SELECT _kind, _k, sumIf(_v, _isb = 0) AS a_total, sumIf(_v, _isb = 1) AS b_total, "
        f"arrayConcat(groupArrayIf(_v, _isb = 1), "
        f"arrayWithConstant(toUInt64(greatest({n} - countIf(_isb = 1), 0)), toFloat64(0))) AS _b "
        f"FROM ({per_bucket}) GROUP BY _kind, _k"
    )
    endpoint_of = {c.alias: s.alias for c, s in pairs}  # client alias -> server alias
    shown = [f"if(_side = 2, _d_{endpoint_of[k.alias]}, _d_{k.alias})" if k.alias in endpoint_of else f"_d_{k.alias}"
             for k in keys]  # fmt: skip
    key_info = (
        f"SELECT least(_side, 1) AS _kind, [_h, {side_hash[0]}, {side_hash[1]}][_side + 1] AS _k, "
        f"{', '.join(f'{e} AS _r_{k.alias}' for e, k in zip(shown, keys, strict=True))} "
        f"FROM ({key_table}) ARRAY JOIN [0, 1, 2] AS _side LIMIT 1 BY _kind, _k"
    )
    out = [
        f"{ip_text('_r_' + k.alias)} AS {k.alias}" if k.kind == "ip" else f"_r_{k.alias} AS {k.alias}"
        for k in keys
    ]
    return (
        f"SELECT s._kind AS kind, {', '.join(out)}, a_total, b_total, "
        f"arrayReduce('quantileExact', _b) AS b_median, arrayReduce('quantileExact', "
        f"arrayMap(x -> abs(x - b_median), _b)) AS b_mad, arrayAvg(arrayMap(x -> abs(x - b_median), _b)) AS b_meanad "
        f"FROM ({per_key}) AS s INNER JOIN ({key_info}) AS i ON s._kind = i._kind AND s._k = i._k"
    )


def split_stats(t: pa.Table, keys: list[StatKey]) -> tuple[pa.Table, pa.Table]:
    """(edges, endpoints) of a :func:`stats_sql` answer; endpoints keep only their key columns (``side`` 0)."""
    stats = ["a_total", "b_total", "b_median", "b_mad", "b_meanad"]
    kind = t["kind"]
    edges = t.filter(pc.equal(kind, 0)).select([k.alias for k in keys] + stats)
    points = t.filter(pc.not_equal(kind, 0)).select([k.alias for k in keys if k.side == 0] + stats)
    return edges, points


def query_stats(store: Any, keys: list[StatKey], metric_sql: str, a: Part, b: Part, nb: int, where: list[str],
                params: Params, dedup: bool = True) -> tuple[pa.Table, pa.Table]:  # fmt: skip
    """Run :func:`stats_sql`; (edges, endpoints)."""
    sql = stats_sql(store.database, keys, metric_sql, a, b, nb, where, params, dedup)
    return split_stats(store.query_arrow(sql, params.values), keys)

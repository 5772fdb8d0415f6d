"""One SQL shape for every analysis: edge rows grouped by keys (and time bucket), sums per group.

Traffic between VMs on two hypervisors is observed by both agents; summing every observation point
counts it twice. With ``dedup`` (the default everywhere) sums are first taken per agent, then the
largest agent's value is kept per group and bucket: each conversation counts once, as seen by the
agent that saw most of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cloudtap.server.analyse._sql import bucket_sql


@dataclass
class Aggregate:
    """A grouped aggregation over one stored edge table.

    Attributes:
        source: quoted ``db.table``.
        keys: (SQL expression, alias) pairs grouped by.
        sums: (SQL expression, alias) pairs summed per group.
        where: conditions (ANDed).
        step_s: bucket width; adds a ``bucket`` column (epoch seconds) when set.
        dedup: count each group once per bucket, as its busiest observation point saw it.
        extra: (inner aggregate, outer aggregate over the inner alias, alias) for non-sum columns, e.g.
            ``("groupUniqArray(8)(server_port)", "arrayDistinct(flatten(groupArray({a})))", "ports")``.
    """

    source: str
    keys: list[tuple[str, str]]
    sums: list[tuple[str, str]]
    where: list[str]
    step_s: int | None = None
    dedup: bool = True
    extra: list[tuple[str, str, str]] = field(default_factory=list)

    def sql(self) -> str:
        """The SELECT (no ORDER BY / LIMIT: wrap it for those)."""
        keys = list(self.keys)
        if self.step_s:
            keys.append((bucket_sql(self.step_s), "bucket"))
        key_aliases = [a for _, a in keys]
        where = " AND ".join(self.where) or "1"
        if not self.dedup:
            select = [f"{e} AS {a}" for e, a in keys]
            select += [f"sum({e}) AS {a}" for e, a in self.sums]
            select += [f"{inner} AS {a}" for inner, _, a in self.extra]
            group = ", ".join(key_aliases) or "tuple()"
            return f"SELECT {', '.join(select)} FROM {self.source} WHERE {where} GROUP BY {group}"
        inner = [f"{e} AS _k{i}" for i, (e, _) in enumerate(keys)] + ["agent_id AS _agent"]
        inner += [f"sum({e}) AS _s{i}" for i, (e, _) in enumerate(self.sums)]
        inner += [f"{x} AS _x{i}" for i, (x, _, _) in enumerate(self.extra)]
        inner_group = ", ".join([f"_k{i}" for i in range(len(keys))] + ["_agent"])
        outer = [f"_k{i} AS {a}" for i, (_, a) in enumerate(keys)]
        outer += [f"max(_s{i}) AS {a}" for i, (_, a) in enumerate(self.sums)]
        outer += [f"{o.format(a=f'_x{i}')} AS {a}" for i, (_, o, a) in enumerate(self.extra)]
        outer_group = ", ".join(f"_k{i}" for i in range(len(keys))) or "tuple()"
        return (
            f"SELECT {', '.join(outer)} FROM (SELECT {', '.join(inner)} FROM {self.source} WHERE {where} "
            f"GROUP BY {inner_group}) GROUP BY {outer_group}"
        )

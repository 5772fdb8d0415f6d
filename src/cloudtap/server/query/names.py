"""Inventory names in queries: filters by name (``vm=db-01``, ``client_project=pay*``) and name columns.

Stored rows carry integer ids per side (``client_vm_id``...). A query may name entities instead:

* a **filter** on ``project``, ``vm``, ``host``, ``subnet``, ``region``, ``pod`` or ``service`` (either side),
  or on ``client_<kind>`` / ``server_<kind>``, takes names or ``*`` globs; they become id filters resolved
  through the inventory (:func:`cloudtap.inventory.names_store.resolve_name_filters`) as it was during the
  query's window (at its start and at its end);
* a **group_by** / raw **column** ``client_vm`` (a *logical* name dimension) groups by ``client_vm_id`` and
  shows the name; grouping by an id dimension (``client_vm_id``, ``vm_id``) adds the name column after it.

Names are looked up after the query ran, at the window's end (or its start, or last known, for an entity
that did not exist then), so the SQL never joins the inventory.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import pyarrow as pa

from cloudtap.inventory.addresses import ID_FIELDS
from cloudtap.inventory.names import NameResolver
from cloudtap.inventory.names_store import NameFilterError, resolve_name_filters
from cloudtap.server.query.errors import QueryError
from cloudtap.server.query.model import Filter, Query

#: Entity kinds that rows carry ids of (``client_<kind>_id`` / ``server_<kind>_id`` / ``<kind>_id``).
KINDS: tuple[str, ...] = tuple(ID_FIELDS)
#: Most ids one name filter may expand to.
MAX_IDS = 10_000
_NAME_DIM = re.compile(rf"^(?:(client|server)_)?({'|'.join(KINDS)})$")
_ID_DIM = re.compile(rf"^(?:(client|server)_)?({'|'.join(KINDS)})_id$")
_GLOB = re.compile(r"[*?\[]")


def name_dimension(dim: str) -> tuple[str | None, str] | None:
    """``(side, kind)`` of a name dimension (``vm`` -> ``(None, "vm")``, ``server_host``), else None."""
    m = _NAME_DIM.match(dim)
    return (m.group(1), m.group(2)) if m else None


def id_dimension(dim: str) -> tuple[str | None, str] | None:
    """``(side, kind)`` of an id dimension (``client_vm_id``, ``vm_id``), else None."""
    m = _ID_DIM.match(dim)
    return (m.group(1), m.group(2)) if m else None


@dataclass(frozen=True)
class Label:
    """A name column the engine adds to a result.

    Attributes:
        id_column: output column holding the ids (``client_vm_id``).
        name: the name column (``client_vm``).
        kind: inventory kind (``vm``).
        replace: the name column takes the id column's place (the query grouped by the logical name).
    """

    id_column: str
    name: str
    kind: str
    replace: bool


@dataclass
class NamePlan:
    """A query with its names taken out: what to resolve before running it and what to add after."""

    query: Query  #: names replaced by ids; name filters hold placeholder ids until :meth:`resolve`
    filters: dict[int, Filter] = field(default_factory=dict)  #: index in ``query.filters`` -> name filter
    labels: list[Label] = field(default_factory=list)

    @property
    def uses_names(self) -> bool:
        """The query filters by name or shows names."""
        return bool(self.filters or self.labels)

    def resolve(self, resolver: NameResolver | None, time_from_ns: int, time_to_ns: int) -> Query:
        """The query with name filters turned into id filters, names resolved over the window.

        Raises:
            QueryError: no inventory, an operator names cannot take, a name matching nothing in the window.
        """
        if not self.filters:
            return self.query
        if resolver is None:
            dims = ", ".join(sorted({f.dim for f in self.filters.values()}))
            raise QueryError(
                f"filter {dims}: filtering by name needs the inventory, and none is configured "
                "(server: inventory.enabled; --data: a store without inventory tables); filter by *_id instead",
                "filters",
            )
        filters = list(self.query.filters)
        instants = sorted({time_from_ns, max(time_from_ns, time_to_ns - 1)})
        for i, f in self.filters.items():
            ids = _ids_of(f, resolver, instants)
            filters[i] = Filter.model_construct(dim=filters[i].dim, op=filters[i].op, value=ids)
        return self.query.model_copy(update={"filters": filters})


def _name_values(f: Filter) -> list[str]:
    values = f.value if isinstance(f.value, list) else [f.value]
    names = [str(v) for v in values]
    if f.op == "prefix":
        names = [n if _GLOB.search(n) else n + "*" for n in names]
    return names


def _ids_of(f: Filter, resolver: NameResolver, instants: Sequence[int]) -> list[int]:
    found: set[int] = set()
    for name in _name_values(f):
        hits: set[int] = set()
        error: NameFilterError | None = None
        for at in instants:
            try:
                resolved = resolve_name_filters({f.dim: name}, resolver, at)
            except NameFilterError as exc:
                error = exc
                continue
            hits.update(next(iter(resolved.values())))
        if not hits:
            assert error is not None
            raise QueryError(f"filter {f.dim}: {error} during the query's window", "filters") from None
        found |= hits
    if len(found) > MAX_IDS:
        raise QueryError(
            f"filter {f.dim}: the names match {len(found)} entities, at most {MAX_IDS}", "filters"
        )
    return sorted(found)


def _id_of_name(side: str | None, kind: str) -> str:
    return f"{side}_{kind}_id" if side else f"{kind}_id"


def plan_names(query: Query, label_ids: bool = True) -> NamePlan:
    """Take the names out of ``query`` (see the module doc).

    Args:
        query: the query as asked.
        label_ids: also add name columns after grouped (or listed) id columns.

    Raises:
        QueryError: a name filter with an operator other than =, !=, in, not in, prefix (glob); order_by on a
            name column.
    """
    filters = list(query.filters)
    name_filters: dict[int, Filter] = {}
    for i, f in enumerate(query.filters):
        parsed = name_dimension(f.dim)
        if parsed is None:
            continue
        if f.op not in ("eq", "ne", "in", "not_in", "prefix"):
            raise QueryError(f"filter {f.dim}: names take =, !=, a list or a * glob, not {f.op!r}", "filters")
        name_filters[i] = f
        op = "not_in" if f.op in ("ne", "not_in") else "in"
        filters[i] = Filter.model_construct(dim=_id_of_name(*parsed), op=op, value=[0])
    labels: list[Label] = []
    update: dict[str, object] = {"filters": filters}
    for attr in ("group_by", "columns"):
        names = getattr(query, attr)
        if not names:
            continue
        out: list[str] = []
        for name in names:
            parsed = name_dimension(name)
            if parsed is not None:
                id_col = _id_of_name(*parsed)
                if id_col in names:  # grouped by both: keep the id, add the name once
                    continue
                out.append(id_col)
                labels.append(Label(id_col, name, parsed[1], replace=True))
                continue
            out.append(name)
            ided = id_dimension(name)
            if ided is not None and label_ids:
                label_name = f"{ided[0]}_{ided[1]}" if ided[0] else ided[1]
                labels.append(Label(name, label_name, ided[1], replace=False))
        update[attr] = out
    label_names = {lb.name for lb in labels}
    for o in query.order_by:
        if o.name in label_names or name_dimension(o.name) is not None:
            raise QueryError(
                f"order_by {o.name!r}: names are looked up after the query; order by its _id column or a metric",
                "order_by",
            )
    if not name_filters and not labels:
        return NamePlan(query)
    return NamePlan(query.model_copy(update=update), name_filters, labels)


def _names_over(resolver: NameResolver, kind: str, ids: list[int], t0: int, t1: int) -> dict[int, str]:
    """Names at the window's end, else at its start, else the last known."""
    out: dict[int, str] = {}
    for at in (max(t0, t1 - 1), t0, None):
        missing = [i for i in ids if i not in out]
        if not missing:
            break
        out.update(resolver.names(kind, missing, at))
    return out


def add_names(
    table: pa.Table,
    labels: Sequence[Label],
    resolver: NameResolver | None,
    time_from_ns: int,
    time_to_ns: int,
) -> pa.Table:
    """``table`` with each label's name column after (or instead of) its id column.

    Id 0 (unknown) is null; an id the inventory has no name for is null next to its id column, and
    ``#<id>`` where the name replaces the id (so distinct entities stay distinct).
    """
    for lb in labels:
        if lb.id_column not in table.column_names:
            continue
        ids = table[lb.id_column].to_pylist()
        wanted = sorted({int(i) for i in ids if i})
        found = (
            _names_over(resolver, lb.kind, wanted, time_from_ns, time_to_ns) if resolver and wanted else {}
        )
        fallback = (lambda i: f"#{i}") if lb.replace else (lambda i: None)
        values = [None if not i else found.get(int(i), fallback(int(i))) for i in ids]
        column = pa.array(values, pa.string())
        at = table.column_names.index(lb.id_column)
        if lb.replace:
            table = table.set_column(at, lb.name, column)
        else:
            table = table.add_column(at + 1, lb.name, column)
    return table

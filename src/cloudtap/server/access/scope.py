"""Project scope inside the storage query.

A caller bound to projects reads flows, edges, endpoints and application requests only where at least
one end is in those projects. The rule is handed to ClickHouse as ``additional_table_filters`` on every read, so it holds
inside every subquery, rollup and count the query engine or an analysis builds: there is no total,
ranking or series computed over rows the caller may not see.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

#: Tables with a client and a server side.
SIDED_TABLES = (
    "flow_log", "edge_1s", "edge_1m", "edge_1h", "request_log", "request_1s", "request_1m", "request_1h",
)  # fmt: skip
#: Tables with one ``project_id`` (an endpoint's own).
ENDPOINT_TABLES = ("endpoint_1s", "endpoint_1m", "endpoint_1h")


@dataclass(frozen=True)
class Scope:
    """Which projects' traffic a caller may read: ``project_ids`` None = all."""

    project_ids: frozenset[int] | None = None
    projects: frozenset[str] | None = None  #: the names the ids came from (for messages)

    @property
    def unrestricted(self) -> bool:
        """True when nothing is filtered."""
        return self.project_ids is None

    def allows(self, project_id: int) -> bool:
        """True when rows of ``project_id`` are visible."""
        return self.project_ids is None or project_id in self.project_ids

    def row_filters(self, database: str, cluster: bool = False) -> dict[str, str]:
        """``additional_table_filters`` for every data table: ``{"db.table": "<condition>"}``."""
        if self.project_ids is None:
            return {}
        ids = ", ".join(str(int(i)) for i in sorted(self.project_ids))
        sided = f"client_project_id IN ({ids}) OR server_project_id IN ({ids})" if ids else "0"
        own = f"project_id IN ({ids})" if ids else "0"
        out: dict[str, str] = {}
        for names, cond in ((SIDED_TABLES, sided), (ENDPOINT_TABLES, own)):
            for name in names:
                for table in (name, f"{name}_local") if cluster else (name,):
                    out[f"{database}.{table}"] = cond
        return out


def table_filters_setting(filters: dict[str, str]) -> str:
    """The ``additional_table_filters`` setting value (a ClickHouse map literal)."""

    def lit(text: str) -> str:
        return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"

    return "{" + ", ".join(f"{lit(t)}: {lit(c)}" for t, c in filters.items()) + "}"


class ScopedStore:
    """A FlowStore whose reads see only the scope's rows; everything else is the wrapped store's.

    Args:
        store: the store (``query_arrow`` must accept ``settings``).
        scope: what may be read.
    """

    def __init__(self, store: Any, scope: Scope) -> None:
        self._store = store
        self.scope = scope
        cluster = bool(getattr(getattr(store, "ctx", None), "cluster", None))
        self._settings = {
            "additional_table_filters": table_filters_setting(scope.row_filters(store.database, cluster))
        }

    def query_arrow(self, sql: str, parameters: dict[str, Any] | None = None) -> pa.Table:
        """Run a read with the scope's row filters."""
        return self._store.query_arrow(sql, parameters, settings=self._settings)  # type: ignore[no-any-return]

    def insert(self, *args: Any, **kwargs: Any) -> Any:
        """Scoped callers never write flows."""
        raise PermissionError("a project-scoped store is read-only for flows")

    def command(self, *args: Any, **kwargs: Any) -> Any:
        """Statements are not scoped, so a scoped store runs none."""
        raise PermissionError("a project-scoped store runs reads only (query_arrow)")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def scoped(store: Any, scope: Scope) -> Any:
    """``store`` itself when unrestricted, else a :class:`ScopedStore`."""
    return store if scope.unrestricted else ScopedStore(store, scope)


def project_ids(names: Iterable[str], resolver: Any) -> frozenset[int]:
    """Ids of the named projects now (unknown names: none)."""
    ids: set[int] = set()
    for name in names:
        ids.update(resolver.ids("project", name) if resolver is not None else [])
    return frozenset(ids)

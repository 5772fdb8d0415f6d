"""The query side: one general query model, a catalog from the store's DDL, a bound-parameter SQL builder.

See docs/query.md. ``QueryEngine(store).run(Query(...))`` answers a query; the HTTP routes and
``cloudtap query`` are thin layers over it. Names are imported lazily (the catalog pulls in the store
DDL), so ``cloudtap.server.query.errors`` and ``.model`` stay cheap to import.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "Filter": "model",
    "MetricSpec": "model",
    "OrderBy": "model",
    "Query": "model",
    "QueryEngine": "engine",
    "QueryResult": "engine",
    "QueryStats": "engine",
    "QueryError": "errors",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

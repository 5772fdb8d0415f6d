"""NameResolver: the contract between the inventory and everything that shows or filters by names.

Flow tables carry integer ids per side (``client_vm_id``...); names are looked up at query time, as they
were at the queried moment, so renaming a VM never rewrites history. The analysis and query layers take
a resolver (``app.state.names``); without an inventory they get :class:`NoNames`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol


class NameResolver(Protocol):
    """Ids <-> names of inventory entities, at a point in time."""

    def names(self, kind: str, ids: Iterable[int], at_ns: int | None = None) -> dict[int, str]:
        """Names of ``ids`` of ``kind`` (``project``, ``host``, ``vm``, ``subnet``, ``region``, ``pod``,
        ``service``) as they were at ``at_ns`` (``None``: now). Unknown ids are left out."""
        ...

    def ids(self, kind: str, name: str, at_ns: int | None = None) -> list[int]:
        """Ids of the entities of ``kind`` called ``name`` (``*`` globs allowed) at ``at_ns``; ``[]`` if none."""
        ...


class NoNames:
    """Resolver used when no inventory is configured: no names, no ids."""

    def names(self, kind: str, ids: Iterable[int], at_ns: int | None = None) -> dict[int, str]:
        return {}

    def ids(self, kind: str, name: str, at_ns: int | None = None) -> list[int]:
        return []

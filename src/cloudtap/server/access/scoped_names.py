"""Names as a project-bound caller may use them: filters resolve only names of entities they can see.

Display (ids -> names) is unchanged: a flow a caller may see shows both ends' names. But a filter
naming another project's VM resolves to nothing, exactly like a name that does not exist, so the
answer never tells that it exists elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from cloudtap.inventory.entities import KIND_SPECS
from cloudtap.inventory.visibility import visible

#: Kinds that belong to projects (others, like regions and zones, are not cut).
SCOPED_KINDS = frozenset({"project", "host", "network", "subnet", "vm", "interface", "namespace", "node", "pod",
                          "service"})  # fmt: skip


class ScopedNames:
    """A NameResolver whose ``ids`` answer only entities visible to ``projects``.

    Args:
        names: the inventory's resolver.
        inventory: the inventory history (``view(at_ns)`` with ``snapshot`` and ``id_of``).
        projects: the caller's project names.
    """

    def __init__(self, names: Any, inventory: Any, projects: frozenset[str]) -> None:
        self._names = names
        self._inventory = inventory
        self._projects = projects

    def names(self, kind: str, ids: Iterable[int], at_ns: int | None = None) -> dict[int, str]:
        """As the inventory's resolver."""
        return self._names.names(kind, ids, at_ns)  # type: ignore[no-any-return]

    def ids(self, kind: str, name: str, at_ns: int | None = None) -> list[int]:
        """Ids of ``kind`` called ``name`` that the caller may see at ``at_ns``."""
        found = self._names.ids(kind, name, at_ns)
        if kind not in SCOPED_KINDS or not found:
            return found  # type: ignore[no-any-return]
        view = self._inventory.view(at_ns)
        mine = getattr(visible(view.snapshot, self._projects), KIND_SPECS[kind][0])
        allowed = {view.id_of(kind, e.key) for e in mine}
        return [i for i in found if i in allowed]

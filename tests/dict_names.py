"""DictNames: a NameResolver over fixed ``kind -> {name: id}`` maps, for analyses and findings tests.

Usage: ``from dict_names import DictNames`` (tests/ is on sys.path, see tests/conftest.py).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable


class DictNames:
    """A NameResolver over fixed ``kind -> {name: id}`` maps."""

    def __init__(self, ids: dict[str, dict[str, int]]) -> None:
        self._ids = ids

    def names(self, kind: str, ids: Iterable[int], at_ns: int | None = None) -> dict[int, str]:
        rev = {v: k for k, v in self._ids.get(kind, {}).items()}
        return {i: rev[i] for i in ids if i in rev}

    def ids(self, kind: str, name: str, at_ns: int | None = None) -> list[int]:
        return sorted(v for k, v in self._ids.get(kind, {}).items() if fnmatch.fnmatchcase(k, name))

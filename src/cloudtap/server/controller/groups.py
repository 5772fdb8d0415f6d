"""Agent groups, each with a versioned config overlay."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from cloudtap.server.controller.db import ControllerDB, dumps
from cloudtap.server.controller.overlay import validate_overlay


@dataclass(frozen=True)
class Group:
    """A group of agents sharing one config overlay."""

    name: str
    overlay: dict[str, Any] = field(default_factory=dict)
    version: int = 0  #: bumped on every overlay change
    description: str = ""
    updated_at: float = 0.0


class Groups:
    """Groups in memory, written through to SQLite."""

    def __init__(self, db: ControllerDB) -> None:
        self.db = db
        self._lock = threading.Lock()
        self._groups = {
            r["name"]: Group(r["name"], json.loads(r["overlay"]), r["version"], r["description"], r["updated_at"])
            for r in db.rows("SELECT * FROM groups")
        }

    def get(self, name: str) -> Group:
        """The group ``name`` (an empty overlay when it was never configured)."""
        return self._groups.get(name) or Group(name)

    def all(self) -> list[Group]:
        return sorted(self._groups.values(), key=lambda g: g.name)

    def ensure(self, name: str) -> Group:
        """Create the group (empty overlay) if missing."""
        with self._lock:
            if name not in self._groups:
                self._store(Group(name, {}, 0, "", time.time()))
            return self._groups[name]

    def set_overlay(self, name: str, overlay: dict[str, Any], description: str | None = None) -> tuple[Group, dict[str, str]]:
        """Replace a group's overlay (validated); the version goes up only when it really changed.

        Returns:
            The group and each overlay key's apply mode (``hot``/``restart``).
        Raises:
            ConfigError: the overlay is not a valid partial AgentConfig.
        """
        modes = validate_overlay(overlay)
        with self._lock:
            old = self._groups.get(name) or Group(name)
            changed = dumps(old.overlay) != dumps(overlay)
            group = Group(name, overlay, old.version + int(changed),
                          old.description if description is None else description, time.time())  # fmt: skip
            self._store(group)
        return group, modes

    def delete(self, name: str) -> None:
        with self._lock:
            self._groups.pop(name, None)
        self.db.execute("DELETE FROM groups WHERE name = ?", (name,))

    def _store(self, group: Group) -> None:
        self._groups[group.name] = group
        self.db.execute(
            "INSERT OR REPLACE INTO groups (name, description, overlay, version, updated_at) VALUES (?,?,?,?,?)",
            (group.name, group.description, dumps(group.overlay), group.version, group.updated_at),
        )

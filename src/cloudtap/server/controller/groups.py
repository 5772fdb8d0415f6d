"""Agent groups, each with a versioned config overlay."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from cloudtap.agent.config_overlay import validate_overlay
from cloudtap.server.controller.db import StateDB, dumps


@dataclass(frozen=True)
class Group:
    """A group of agents sharing one config overlay."""

    name: str
    overlay: dict[str, Any] = field(default_factory=dict)
    version: int = 0  #: bumped on every overlay change
    description: str = ""
    updated_at: float = 0.0


class Groups:
    """Groups in memory, written through to the database (versions counted there, so two server processes
    never hand out one version twice); reloaded whenever another process changes them."""

    def __init__(self, db: StateDB) -> None:
        self.db = db
        self._lock = threading.RLock()
        self._groups: dict[str, Group] = {}
        db.subscribe("groups", self.reload)
        self.reload()

    def reload(self, _detail: str = "") -> None:
        """Read every group again."""
        with self._lock:
            self._groups = {r["name"]: _group(r) for r in self.db.rows("SELECT * FROM groups")}

    def get(self, name: str) -> Group:
        """The group ``name`` (an empty overlay when it was never configured)."""
        return self._groups.get(name) or Group(name)

    def all(self) -> list[Group]:
        return sorted(self._groups.values(), key=lambda g: g.name)

    def ensure(self, name: str) -> Group:
        """Create the group (empty overlay) if missing (another process's group is kept as it is)."""
        with self._lock:
            if name not in self._groups:
                self.db.execute("INSERT INTO groups (name, description, overlay, version, updated_at) "
                                "VALUES (?, '', '{}', 0, ?) ON CONFLICT(name) DO NOTHING", (name, time.time()))  # fmt: skip
                rows = self.db.rows("SELECT * FROM groups WHERE name = ?", (name,))
                self._groups[name] = _group(rows[0]) if rows else Group(name)
            return self._groups[name]

    def set_overlay(self, name: str, overlay: dict[str, Any], description: str | None = None) -> tuple[Group, dict[str, str]]:
        """Replace a group's overlay (validated); the version goes up only when it really changed.

        Returns:
            The group and each overlay key's apply mode (``hot``/``restart``).
        Raises:
            ConfigError: the overlay is not a valid partial AgentConfig.
        """
        modes = validate_overlay(overlay)
        text = dumps(overlay)
        with self._lock:
            rows = self.db.rows(
                """INSERT INTO groups (name, description, overlay, version, updated_at) VALUES (?, ?, ?, ?, ?)
                   ON CONFLICT(name) DO UPDATE SET
                     description = CASE WHEN ? THEN excluded.description ELSE groups.description END,
                     version = groups.version + CASE WHEN groups.overlay = excluded.overlay THEN 0 ELSE 1 END,
                     overlay = excluded.overlay, updated_at = excluded.updated_at
                   RETURNING name, description, overlay, version, updated_at""",
                (name, description or "", text, int(text != dumps({})), time.time(), description is not None),
            )
            group = _group(rows[0])
            self._groups[name] = group
        return group, modes

    def delete(self, name: str) -> None:
        with self._lock:
            self._groups.pop(name, None)
            self.db.execute("DELETE FROM groups WHERE name = ?", (name,))


def _group(row: dict[str, Any]) -> Group:
    return Group(row["name"], json.loads(row["overlay"]), row["version"], row["description"], row["updated_at"])

"""Principal: who is calling (a user by password, token, session or SSO), and what they may do where."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cloudtap.server.access.permissions import GLOBAL_ONLY, ROLES, Permission, check_role


@dataclass(frozen=True)
class RoleBinding:
    """A role, on every project (``projects`` None) or only on the named ones."""

    role: str
    projects: frozenset[str] | None = None

    @classmethod
    def parse(cls, doc: dict[str, Any]) -> RoleBinding:
        """From ``{"role": "operator", "projects": ["shop"]}`` (projects absent or null: all)."""
        role = check_role(str(doc.get("role", "")))
        projects = doc.get("projects")
        if projects is not None:
            if isinstance(projects, str) or not all(isinstance(p, str) and p for p in projects):
                raise ValueError("projects must be a list of project names")
            return cls(role, frozenset(projects))
        return cls(role, None)

    def to_doc(self) -> dict[str, Any]:
        """The JSON form (projects sorted)."""
        return {"role": self.role, "projects": sorted(self.projects) if self.projects is not None else None}


@dataclass(frozen=True)
class Principal:
    """An authenticated caller.

    Attributes:
        name: user name (``agent:<id>`` for agents).
        via: how they proved it: ``password``, ``token``, ``session``, ``oidc``, ``agent``.
        bindings: role bindings (a user may hold several).
        token_id: the API token used, if any (audited).
    """

    name: str
    via: str
    bindings: tuple[RoleBinding, ...] = field(default_factory=tuple)
    token_id: str | None = None

    def projects_for(self, permission: Permission) -> frozenset[str] | None:
        """Where ``permission`` holds: None = every project; an empty set = nowhere."""
        projects: set[str] = set()
        for b in self.bindings:
            if permission not in ROLES[b.role]:
                continue
            if b.projects is None:
                return None
            if permission not in GLOBAL_ONLY:
                projects |= b.projects
        return frozenset(projects)

    def can(self, permission: Permission) -> bool:
        """True when the permission holds on at least one project."""
        scope = self.projects_for(permission)
        return scope is None or bool(scope)

    @property
    def roles(self) -> list[str]:
        """Role names, strongest first."""
        order = list(ROLES)
        return sorted({b.role for b in self.bindings}, key=lambda r: -order.index(r))

    def describe(self) -> dict[str, Any]:
        """Who, how and what: the ``/auth/me`` answer (no secrets)."""
        return {
            "name": self.name,
            "via": self.via,
            "roles": self.roles,
            "bindings": [b.to_doc() for b in self.bindings],
            "permissions": {
                p.value: (sorted(s) if (s := self.projects_for(p)) is not None else "*")
                for p in Permission
                if self.can(p)
            },
        }

"""Permissions and the roles that grant them.

Every API route declares one :class:`Permission` (or :data:`PUBLIC`); a user holds roles through role
bindings, each optionally limited to projects. ``viewer`` reads, ``operator`` also acts on the fleet and
pulls packets, ``admin`` does everything, including users, tokens and the audit log.
"""

from __future__ import annotations

from enum import StrEnum


class Permission(StrEnum):
    """What a route needs."""

    FLOWS_READ = "flows:read"  #: flows, edges, topology, compare, drill-down, backtest
    INVENTORY_READ = "inventory:read"  #: projects, hosts, VMs, interfaces, subnets
    FLEET_READ = "fleet:read"  #: agents, groups, policies, fleet monitoring, "why no data"
    PCAP_READ = "pcap:read"  #: raw packets from the agents' packet stores
    SIGNATURES_WRITE = "signatures:write"  #: save or delete backtest signatures
    FINDINGS_WRITE = "findings:write"  #: acknowledge, mute findings; run the findings engine on a window
    FLEET_CONTROL = "fleet:control"  #: start/stop capture, move or delete agents
    CONFIG_WRITE = "config:write"  #: group configs and policies
    INVENTORY_SYNC = "inventory:sync"  #: run the inventory and policy sync now
    METRICS_READ = "metrics:read"  #: Prometheus /metrics
    AUDIT_READ = "audit:read"  #: the audit log
    USERS_MANAGE = "users:manage"  #: users, role bindings, other users' tokens


#: Marker of a route that anyone may call (health, login, OpenAPI).
PUBLIC = "public"
#: Marker of a route only agents call, with their own credential.
AGENT = "agent"
#: Marker of a route any logged-in user may call (their own profile and tokens).
AUTHENTICATED = "authenticated"

_VIEWER = frozenset(
    {Permission.FLOWS_READ, Permission.INVENTORY_READ, Permission.FLEET_READ, Permission.METRICS_READ}
)
_OPERATOR = _VIEWER | {
    Permission.PCAP_READ,
    Permission.SIGNATURES_WRITE,
    Permission.FINDINGS_WRITE,
    Permission.FLEET_CONTROL,
    Permission.CONFIG_WRITE,
    Permission.INVENTORY_SYNC,
}
ROLES: dict[str, frozenset[Permission]] = {
    "viewer": _VIEWER,
    "operator": frozenset(_OPERATOR),
    "admin": frozenset(Permission),
}
#: Permissions whose scope is every project or nothing: a project-bound grant does not give them.
GLOBAL_ONLY = frozenset({Permission.USERS_MANAGE, Permission.AUDIT_READ, Permission.METRICS_READ,
                         Permission.INVENTORY_SYNC})  # fmt: skip


def check_role(role: str) -> str:
    """``role`` if it is known, else ValueError naming the roles."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
    return role

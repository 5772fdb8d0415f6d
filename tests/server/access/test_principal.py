"""Principal: where each permission holds, from role bindings."""

from __future__ import annotations

import pytest

from cloudtap.server.access.permissions import Permission
from cloudtap.server.access.principal import Principal, RoleBinding


def test_viewer_reads_but_does_not_act_or_pull_packets() -> None:
    viewer = Principal("v", "token", (RoleBinding("viewer"),))
    assert viewer.projects_for(Permission.FLOWS_READ) is None
    assert not viewer.can(Permission.PCAP_READ)
    assert not viewer.can(Permission.FLEET_CONTROL)
    assert not viewer.can(Permission.USERS_MANAGE)


def test_bindings_add_up_per_permission() -> None:
    p = Principal("p", "token", (RoleBinding("viewer"), RoleBinding("operator", frozenset({"shop"}))))
    assert p.projects_for(Permission.FLOWS_READ) is None  # viewer everywhere
    assert p.projects_for(Permission.PCAP_READ) == frozenset({"shop"})  # packets of shop only
    assert p.roles == ["operator", "viewer"]


def test_global_permissions_are_not_granted_by_a_project_binding() -> None:
    local_admin = Principal("a", "token", (RoleBinding("admin", frozenset({"shop"})),))
    assert local_admin.projects_for(Permission.FLEET_CONTROL) == frozenset({"shop"})
    assert not local_admin.can(Permission.USERS_MANAGE)
    assert not local_admin.can(Permission.AUDIT_READ)


def test_binding_documents_are_checked() -> None:
    assert RoleBinding.parse({"role": "operator", "projects": ["a", "b"]}).projects == frozenset({"a", "b"})
    assert RoleBinding.parse({"role": "admin"}).projects is None
    with pytest.raises(ValueError, match="unknown role"):
        RoleBinding.parse({"role": "root"})
    with pytest.raises(ValueError, match="list of project names"):
        RoleBinding.parse({"role": "viewer", "projects": "shop"})

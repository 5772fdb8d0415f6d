"""Cloud API test servers for the inventory connectors.

- ``openstack_stub`` / ``kubernetes_stub``: stub APIs (tests/inventory/stubs) on a free loopback port;
- ``vcsim``: govmomi's vCenter simulator (tests/inventory/vcsim, built once and cached in .cache/vcsim);
  skips with the reason when golang-go / golang-github-vmware-govmomi-dev are not installed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from stubs.kubernetes_api import KubernetesStub
from stubs.openstack_api import OpenStackStub
from vcsim.vcsim import Vcsim, VcsimUnavailable, build


@pytest.fixture
def openstack_stub() -> Iterator[OpenStackStub]:
    """A stub Keystone/Nova/Neutron (``auth_url``; user admin / password secret)."""
    with OpenStackStub() as stub:
        yield stub  # type: ignore[misc]


@pytest.fixture
def kubernetes_stub() -> Iterator[KubernetesStub]:
    """A stub kube-apiserver (``base_url``; bearer token ``stubs.kubernetes_api.TOKEN``)."""
    with KubernetesStub() as stub:
        yield stub  # type: ignore[misc]


@pytest.fixture(scope="session")
def vcsim_binary() -> Path:
    """The simulator binary (built on first use); skips when go/govmomi are missing."""
    try:
        return build()
    except VcsimUnavailable as exc:
        pytest.skip(f"vcsim unavailable: {exc}")


@pytest.fixture
def vcsim(vcsim_binary: Path) -> Iterator[Vcsim]:
    """A fresh simulated vCenter: DC0 with standalone host DC0_H0 and cluster DC0_C0 of 3 hosts, 2 VMs
    per host/cluster, port group DC0_DVPG0 on VLAN 100; login ``vcsim.user`` / ``vcsim.password``."""
    with Vcsim(vcsim_binary) as sim:
        yield sim

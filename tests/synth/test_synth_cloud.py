"""Cloud resolution: VM placement, addresses, selectors and the inventory."""

from __future__ import annotations

import ipaddress

import numpy as np
import pytest

from cloudtap.errors import ConfigError
from cloudtap.synth import builtin_scenario
from cloudtap.synth.cloud import build_cloud
from cloudtap.synth.scenario import scenario_from_dict


@pytest.fixture(scope="module")
def cloud():
    return build_cloud(builtin_scenario("small-cloud"))


def test_vm_addresses_are_in_their_project_subnet_and_unique(cloud) -> None:
    for i in range(cloud.n_vms):
        net = ipaddress.IPv4Network(cloud.project_subnets[cloud.vm_project[i]])
        assert ipaddress.IPv4Address(int(cloud.vm_ip[i])) in net
    assert np.unique(cloud.vm_ip).size == cloud.n_vms
    assert np.unique(cloud.vm_mac).size == cloud.n_vms
    assert all(int(m) >> 24 == 0xFA163E for m in cloud.vm_mac)


def test_vms_are_spread_over_all_hosts(cloud) -> None:
    counts = np.bincount(cloud.vm_host, minlength=len(cloud.host_names))
    assert counts.min() >= cloud.n_vms // len(cloud.host_names) - 1
    assert [str(ipaddress.IPv4Address(int(h))) for h in cloud.host_ip] == [
        "10.0.0.11",
        "10.0.0.12",
        "10.0.0.13",
        "10.0.0.14",
    ]


def test_select_and_resolve(cloud) -> None:
    web = cloud.select("shop/web")
    assert [cloud.vm_names[i] for i in web] == [f"web-0{k}" for k in range(1, 6)]
    assert cloud.select("*").size == cloud.n_vms
    assert cloud.select("backup").size == 1
    assert [cloud.vm_names[i] for i in cloud.select("infra/dns-0*")] == ["dns-01", "dns-02"]
    assert cloud.select("nosuch/web").size == 0
    assert cloud.vm_names[cloud.resolve_vm("db-01")] == "db-01"
    assert cloud.vm_names[cloud.resolve_vm("infra/backup-01")] == "backup-01"
    with pytest.raises(ConfigError, match="no VM named 'db-09'"):
        cloud.resolve_vm("db-09")


def test_ambiguous_vm_name_needs_project() -> None:
    scn = scenario_from_dict(
        {
            "cloud": {
                "hosts": 1,
                "projects": [
                    {"name": "a", "vms": [{"role": "db"}, {"role": "web"}]},
                    {"name": "b", "vms": [{"role": "db"}]},
                ],
            },
        }
    )
    cloud = build_cloud(scn)
    with pytest.raises(ConfigError, match="write project/db-01"):
        cloud.resolve_vm("db-01")
    assert cloud.project_names[cloud.vm_project[cloud.resolve_vm("b/db-01")]] == "b"
    assert list(cloud.project_vni) == [5001, 5002]


def test_inventory(cloud) -> None:
    inv = cloud.inventory()
    assert [p["name"] for p in inv["projects"]] == ["shop", "analytics", "infra"]
    assert len(inv["hosts"]) == 4 and len(inv["vms"]) == 30
    vm = next(v for v in inv["vms"] if v["name"] == "db-01")
    assert vm["project"] == "shop" and vm["vni"] == 5001 and vm["vlan"] == 101
    assert vm["host"] in {h["name"] for h in inv["hosts"]}
    assert ipaddress.IPv4Address(vm["ip"]) in ipaddress.IPv4Network("10.10.1.0/24")
    assert vm["mac"].startswith("fa:16:3e:")

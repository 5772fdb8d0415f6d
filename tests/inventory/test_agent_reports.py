"""Agents' reports -> the inventory: nova identities, IPs seen, bounded heartbeat fields, old agents."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from cloudtap.inventory.connectors.agents import seen_addresses, snapshot_from_agents
from cloudtap.server.controller.status import MAX_IPS_PER_PORT, MAX_TEXT, HeartbeatReport, inventory_report

UUID = "7d3e9c2a-41f6-4b8e-9a0d-2c5f8e1b6a93"
PROJECT = "c2e4a6b8d0f24e6a8c0e2f4a6b8d0f21"
NOVA = {"domain": "instance-0000002a", "uuid": UUID, "name": "web-frontend-1", "project_id": PROJECT,
        "project_name": "demo", "flavor": "m1.small", "user_id": "u1", "user_name": "alice"}  # fmt: skip


def heartbeat(**extra: Any) -> dict[str, Any]:
    return {"version": "t", "interfaces": [
        {"name": "tap3f2a9c1e-7b", "mac": "FA:16:3E:5D:21:8C", "domain": "instance-0000002a", "uuid": UUID,
         "ips": [{"ip": "10.0.0.17", "first_seen_ns": 5, "last_seen_ns": 9}, "2001:DB8::17"]},
        {"name": "eth1", "mac": None},  # the capture interface of a mirror
        {"name": "tapbad", "mac": "not-a-mac", "domain": "x"}], **extra}  # fmt: skip


def test_nova_identity_makes_projects_and_named_vms() -> None:
    report = inventory_report("agent-1", "hv-01", "192.0.2.1", HeartbeatReport.model_validate(heartbeat(vms=[NOVA])))
    assert [i["name"] for i in report["interfaces"]] == ["tap3f2a9c1e-7b"]  # no MAC / bad MAC: not a VM port
    snap = snapshot_from_agents([report], taken_at=1)
    assert [(p.key, p.name) for p in snap.projects] == [(PROJECT, "demo")]
    (vm,) = snap.vms
    assert (vm.key, vm.name, vm.project, vm.host, vm.tags) == (UUID, "web-frontend-1", PROJECT, "hv-01",
                                                               ("flavor=m1.small", "user_name=alice"))  # fmt: skip
    (nic,) = snap.interfaces
    assert (nic.mac, nic.ips, nic.vm, nic.device) == ("fa:16:3e:5d:21:8c", ("10.0.0.17", "2001:db8::17"), UUID,
                                                      "tap3f2a9c1e-7b")  # fmt: skip
    assert seen_addresses([report]) == {("fa:16:3e:5d:21:8c", "10.0.0.17"): (5, 9),
                                        ("fa:16:3e:5d:21:8c", "2001:db8::17"): (0, 0)}  # fmt: skip


def test_without_nova_metadata_the_domain_names_the_vm() -> None:
    no_meta = HeartbeatReport.model_validate(heartbeat(vms=[{"domain": "instance-0000002a", "uuid": UUID}]))
    (vm,) = snapshot_from_agents([inventory_report("a", "hv-01", "", no_meta)]).vms
    assert (vm.key, vm.name, vm.project) == (UUID, "instance-0000002a", "")
    old = {"version": "0.9", "interfaces": [{"name": "vnet0", "mac": "52:54:00:00:00:01", "domain": "web01"}]}
    snap = snapshot_from_agents([inventory_report("a", "hv-01", "", HeartbeatReport.model_validate(old))])
    assert [(v.key, v.name) for v in snap.vms] == [("web01", "web01")] and snap.projects == []


def test_heartbeat_bounds_what_an_agent_can_make_the_server_keep() -> None:
    many = [{"ip": f"10.0.{i // 250}.{i % 250}", "last_seen_ns": i} for i in range(1000)]
    big = heartbeat(vms=[{**NOVA, "name": "n" * 100_000}] * 5000)
    big["interfaces"][0]["ips"] = many
    big["interfaces"][0]["domain"] = "d" * 10_000
    report = HeartbeatReport.model_validate(big)
    assert len(report.interfaces[0].ips) == MAX_IPS_PER_PORT and report.interfaces[0].ips[0].ip == "10.0.0.0"
    assert len(report.interfaces[0].domain or "") == MAX_TEXT and len(report.vms) == 4096
    assert len(report.vms[0].name) == MAX_TEXT
    with pytest.raises(ValidationError, match="ips"):
        HeartbeatReport.model_validate({"interfaces": [{"name": "t", "ips": ["10.0.0.300"]}]})
    with pytest.raises(ValidationError):
        HeartbeatReport.model_validate({"interfaces": [{"name": "t", "ips": [{"ip": "x" * 10_000}]}]})
    stored = HeartbeatReport.model_validate_json(report.model_dump_json())  # persisted and read back alike
    assert stored == report

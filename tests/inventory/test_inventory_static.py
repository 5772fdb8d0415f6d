"""Static inventory (YAML, CSV) with clear errors, agent learning, the Syncer, and synth --inventory."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from cloudtap.errors import ConfigError
from cloudtap.inventory.connectors.agents import AgentsConnector, snapshot_from_agents
from cloudtap.inventory.connectors.base import Connector, Syncer
from cloudtap.inventory.connectors.static import (
    StaticConnector,
    load_static,
    parse_static_csv,
    parse_static_yaml,
)
from cloudtap.inventory.model import Snapshot
from cloudtap.inventory.store import InventoryStore

YAML = """
valid_from: 2026-11-20T00:00:00Z
regions: [{name: eu}]
projects: [{name: payments, region: eu}]
hosts: [{name: hv-01, address: 10.0.0.11, region: eu}]
networks: [{name: pay-net, project: payments, segment: 101}]
subnets: [{name: pay-sub, cidr: 10.10.1.0/24, network: pay-net, project: payments}]
vms:
  - name: db-01
    project: payments
    host: hv-01
    tags: [tier=db]
    interfaces: [{mac: FA-16-3E-00-00-01, ips: [10.10.1.10], network: pay-net, subnet: pay-sub, device: tap1}]
"""


def test_yaml_inventory() -> None:
    snap = parse_static_yaml(YAML, "inv.yaml")
    assert snap.source == "static" and snap.taken_at == 1_795_132_800 * 10**9
    vm = snap.vms[0]
    assert (vm.key, vm.name, vm.project, vm.host, vm.tags) == ("payments/db-01", "db-01", "payments", "hv-01", ("tier=db",))
    nic = snap.interfaces[0]
    assert (nic.key, nic.mac, nic.ips, nic.vm, nic.device) == (
        "fa:16:3e:00:00:01", "fa:16:3e:00:00:01", ("10.10.1.10",), "payments/db-01", "tap1",
    )  # fmt: skip
    assert snap.networks[0].segment == 101 and snap.hosts[0].address == "10.0.0.11"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("vms: [{name: a, interfaces: [{mac: zz}]}]", r"inv.yaml: vms.0.interfaces.0.mac: not a MAC address: 'zz'"),
        ("vms: [{name: a, project: nope}]", r"inv.yaml: vm 'nope/a': unknown project 'nope'"),
        ("hosts: [{name: a}, {name: a}]", r"host key 'a' is used twice"),
        ("subnets: [{name: s, cidr: 10.0.0.300/24}]", r"subnets.0.cidr"),
        ("vm: []", r"inv.yaml: vm: Extra inputs are not permitted"),
        ("vms: [{name: a\n", r"inv.yaml: not valid YAML"),
        ("- a\n- b\n", r"expected a mapping"),
        ("networks: [{name: n, segment: 99999999}]", r"networks.0.segment"),
    ],
)
def test_yaml_errors_name_file_and_entry(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_static_yaml(text, "inv.yaml")


def test_csv_inventory() -> None:
    text = (
        "name,project,host,ip,mac,network,segment,subnet,cidr,tags\n"
        "web-01,shop,hv-01,10.1.0.5;fd00::5,fa:16:3e:00:00:05,shop-net,102,shop-sub,10.1.0.0/24,a;b\n"
        "web-01,shop,hv-01,10.2.0.5,fa:16:3e:00:00:06,shop-net,,shop-sub,,a;b\n"
        "db-01,,hv-02,,,,,,,\n"
    )
    snap = parse_static_csv(text, "inv.csv")
    assert [v.key for v in snap.vms] == ["shop/web-01", "db-01"]
    assert [(i.mac, i.ips) for i in snap.interfaces] == [
        ("fa:16:3e:00:00:05", ("10.1.0.5", "fd00::5")), ("fa:16:3e:00:00:06", ("10.2.0.5",)),
    ]  # fmt: skip
    assert [(n.key, n.segment) for n in snap.networks] == [("shop-net", 102)]
    assert [(s.key, s.cidr) for s in snap.subnets] == [("shop-sub", "10.1.0.0/24")]
    assert sorted(h.key for h in snap.hosts) == ["hv-01", "hv-02"]
    assert snap.vms[0].tags == ("a", "b")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("vm,ip\n", r"at least a 'name' column"),
        ("name,colour\n", r"unknown column\(s\) \['colour'\]"),
        ("name,ip,mac\na,10.0.0.999,fa:16:3e:00:00:01\n", r"inv.csv line 2: .*10.0.0.999"),
        ("name,ip\na,10.0.0.1\n", r"inv.csv line 2: an interface needs a 'mac'"),
        ("name,host\na,h\na,g\n", r"inv.csv line 3: VM 'a' is described differently"),
        ("name,subnet,mac\na,s,fa:16:3e:00:00:01\n", r"line 2: give both 'subnet' and 'cidr'"),
    ],
)
def test_csv_errors_name_the_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_static_csv(text, "inv.csv")


def test_load_static_by_extension(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(YAML)
    (tmp_path / "a.txt").write_text(YAML)
    assert load_static(tmp_path / "a.yaml").vms[0].name == "db-01"
    with pytest.raises(ConfigError, match="a.txt: a static inventory is a .yaml"):
        load_static(tmp_path / "a.txt")
    with pytest.raises(ConfigError, match="cannot read the static inventory"):
        load_static(tmp_path / "missing.csv")


def test_agent_reports_become_a_snapshot() -> None:
    reports = [
        {"agent_id": "a1", "host": "hv-01", "address": "10.0.0.11",
         "interfaces": [{"name": "vnet0", "mac": "52:54:00:00:00:01", "domain": "instance-01", "ips": ["10.1.0.7"]},
                        {"name": "vnet1", "mac": "52:54:00:00:00:02", "domain": ""}]},
        {"agent_id": "a2", "host": "hv-02", "interfaces": [{"name": "vnet4", "mac": "52:54:00:00:00:01",
                                                            "domain": "instance-01"}]},  # migrated since
    ]  # fmt: skip
    snap = snapshot_from_agents(reports, taken_at=5)
    assert snap.source == "agents" and [h.key for h in snap.hosts] == ["hv-01", "hv-02"]
    assert [(v.key, v.host) for v in snap.vms] == [("instance-01", "hv-02")]
    assert {i.mac: (i.vm, i.device) for i in snap.interfaces} == {
        "52:54:00:00:00:01": ("instance-01", "vnet4"), "52:54:00:00:00:02": ("", "vnet1"),
    }  # fmt: skip
    with pytest.raises(ConfigError, match="agent a9: interfaces.0: not a MAC"):
        snapshot_from_agents([{"agent_id": "a9", "host": "h", "interfaces": [{"mac": "x"}]}])
    with pytest.raises(ConfigError, match="agent a9: report has no 'host'"):
        snapshot_from_agents([{"agent_id": "a9"}])


class Broken:
    name = "openstack"

    def fetch(self) -> Snapshot:
        raise RuntimeError("keystone said 401 Unauthorized")


def test_syncer_surfaces_errors_and_keeps_going(tmp_path: Path) -> None:
    path = tmp_path / "inv.yaml"
    path.write_text(YAML)
    inv = InventoryStore()
    agents = AgentsConnector(clock=lambda: 10**18)
    syncer = Syncer(inv, [Broken(), StaticConnector(path), agents], period_s=3600)
    assert all(isinstance(c, Connector) for c in syncer.connectors)
    results = {r.name: r for r in syncer.sync()}
    assert results["openstack"].error == "RuntimeError: keystone said 401 Unauthorized"
    assert results["static"].summary is not None and results["static"].summary.added["vm"] == 1
    status = {s.name: s for s in syncer.status()}
    assert not status["openstack"].ok and status["openstack"].consecutive_failures == 1
    assert "401" in (status["openstack"].last_error or "") and status["openstack"].last_success_ns is None
    assert status["static"].ok and status["static"].last_summary["total"] == 7
    agents.update({"agent_id": "a1", "host": "hv-09", "interfaces": []})
    assert syncer.sync("agents")[0].summary.added == {"host": 1}  # type: ignore[union-attr]
    with pytest.raises(KeyError, match="no connector 'vsphere'"):
        syncer.sync("vsphere")


def test_syncer_thread_syncs_on_request(tmp_path: Path) -> None:
    path = tmp_path / "inv.yaml"
    path.write_text(YAML)
    inv = InventoryStore()
    syncer = Syncer(inv, [StaticConnector(path)], period_s=3600)
    syncer.start()
    try:
        deadline = time.monotonic() + 10
        while not inv.current().vms and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [v.name for v in inv.current().vms] == ["db-01"]
        path.write_text(YAML.replace("db-01", "db-02"))
        syncer.request_sync()
        while inv.current().vms[0].name != "db-02" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert inv.current().vms[0].name == "db-02"
    finally:
        syncer.stop()
    assert syncer.status()[0].syncs >= 2


def test_synth_cli_writes_a_static_inventory(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cloudtap.cli.main import app

    inv_path = tmp_path / "cloud.yaml"
    result = CliRunner().invoke(
        app, ["synth", "small-cloud", "-o", str(tmp_path / "c.pcap"), "--duration", "2s", "-q", "--inventory", str(inv_path)]
    )
    assert result.exit_code == 0, result.output
    snap = load_static(inv_path)
    assert len(snap.vms) == 30 and len(snap.projects) == 3 and len(snap.hosts) == 4
    assert {n.key: n.segment for n in snap.networks} == {"shop-net": 101, "analytics-net": 102, "infra-net": 103}
    assert all(i.ips and i.vm and i.subnet for i in snap.interfaces)
    checked = CliRunner().invoke(app, ["inventory", "check", str(inv_path)])
    assert checked.exit_code == 0 and "30 vm" in checked.output

"""vSphere connector against govmomi's vCenter simulator (vcsim), driven through pyVmomi."""

from __future__ import annotations

import socket
import ssl

import pytest

pytest.importorskip("pyVmomi")

from cloudtap.inventory.connectors.base import Connector, ConnectorError  # noqa: E402
from cloudtap.inventory.connectors.vsphere import VSphereConfig, VSphereConnector, from_settings  # noqa: E402


def _connector(sim, **over) -> VSphereConnector:
    cfg = {
        "host": sim.host,
        "port": sim.port,
        "username": sim.user,
        "password": sim.password,
        "insecure": True,
    }
    return VSphereConnector(VSphereConfig(**{**cfg, **over}))


def test_snapshot_content(vcsim) -> None:
    conn = _connector(vcsim)
    assert isinstance(conn, Connector)
    snap = conn.fetch()
    assert snap.source == "vsphere"
    assert [r.name for r in snap.regions] == ["DC0"]
    dc = snap.regions[0].key
    assert [(z.name, z.region) for z in snap.zones] == [("DC0_C0", dc)]
    cluster = snap.zones[0].key
    hosts = {h.name: h for h in snap.hosts}
    assert sorted(hosts) == ["DC0_C0_H0", "DC0_C0_H1", "DC0_C0_H2", "DC0_H0"]
    assert hosts["DC0_H0"].zone == "" and hosts["DC0_C0_H1"].zone == cluster
    assert all(h.region == dc and h.address for h in snap.hosts)
    # 2 VMs on the standalone host + 2 in the cluster's resource pool
    vms = {v.name: v for v in snap.vms}
    assert sorted(vms) == ["DC0_C0_RP0_VM0", "DC0_C0_RP0_VM1", "DC0_H0_VM0", "DC0_H0_VM1"]
    assert vms["DC0_H0_VM0"].host == hosts["DC0_H0"].key
    assert vms["DC0_C0_RP0_VM0"].host in {hosts[n].key for n in hosts if n.startswith("DC0_C0_")}
    assert all(v.state == "poweredOn" for v in snap.vms)
    # port groups: the DVS port group carries its VLAN, the uplink port group is left out
    nets = {n.name: n for n in snap.networks}
    assert nets["DC0_DVPG0"].segment == 100
    assert "VM Network" in nets and not any("DVUplinks" in n for n in nets)
    # one NIC per VM: MAC, guest IP (from guest.net), port group
    assert len(snap.interfaces) == 4
    by_vm = {i.vm: i for i in snap.interfaces}
    nic = by_vm[vms["DC0_H0_VM0"].key]
    assert nic.mac.startswith("00:0c:29:") and nic.mac == nic.mac.lower()
    assert len(nic.ips) == 1 and nic.ips[0].startswith("10.0.0.")  # first NIC, VM n: 10.0.0.<10+n>
    assert nic.network in {n.key for n in snap.networks}
    assert len({i.ips for i in snap.interfaces}) == 4  # distinct IPs


def test_vm_moved_to_another_host_shows_in_next_snapshot(vcsim) -> None:
    from pyVim.connect import Disconnect, SmartConnect
    from pyVim.task import WaitForTask
    from pyVmomi import vim

    conn = _connector(vcsim)
    before = {v.name: v for v in conn.fetch().vms}
    vm_name = "DC0_C0_RP0_VM0"
    si = SmartConnect(
        host=vcsim.host, port=vcsim.port, user=vcsim.user, pwd=vcsim.password, disableSslCertValidation=True
    )
    try:
        content = si.RetrieveContent()
        view = content.viewManager.CreateContainerView(
            content.rootFolder, [vim.VirtualMachine, vim.HostSystem], True
        )
        objs = {o.name: o for o in view.view}
        view.Destroy()
        vm = objs[vm_name]
        target = next(
            o for n, o in sorted(objs.items()) if n.startswith("DC0_C0_H") and o._moId != before[vm_name].host
        )
        WaitForTask(
            vm.RelocateVM_Task(spec=vim.vm.RelocateSpec(host=target, pool=target.parent.resourcePool))
        )
    finally:
        Disconnect(si)
    after = {v.name: v for v in conn.fetch().vms}
    assert after[vm_name].host == target._moId != before[vm_name].host
    assert {n: v.host for n, v in after.items() if n != vm_name} == {
        n: v.host for n, v in before.items() if n != vm_name
    }


def test_wrong_password_is_a_clear_error(vcsim) -> None:
    with pytest.raises(ConnectorError) as err:
        _connector(vcsim, password="wrong").fetch()
    msg = str(err.value)
    assert msg.startswith("vsphere connector (") and "login failed" in msg and "authentication refused" in msg


def test_untrusted_certificate_is_a_clear_error(vcsim) -> None:
    with pytest.raises(
        ConnectorError, match=r"vsphere connector .*TLS certificate verification failed"
    ) as err:
        _connector(vcsim, insecure=False).fetch()
    assert isinstance(err.value.__cause__, ssl.SSLError)


def test_server_down_is_a_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    conn = from_settings(
        {"host": "127.0.0.1", "port": port, "username": "u", "password": "p", "insecure": True}
    )
    with pytest.raises(
        ConnectorError, match=rf"vsphere connector \(127\.0\.0\.1:{port}\): login failed: cannot reach"
    ):
        conn.fetch()


def test_vm_folder_is_its_project_and_paging_changes_nothing(vcsim) -> None:
    from pyVim.connect import Disconnect, SmartConnect
    from pyVim.task import WaitForTask

    si = SmartConnect(
        host=vcsim.host, port=vcsim.port, user=vcsim.user, pwd=vcsim.password, disableSslCertValidation=True
    )
    try:
        content = si.RetrieveContent()
        dc = content.rootFolder.childEntity[0]
        folder = dc.vmFolder.CreateFolder("payments")
        vm = next(v for v in dc.vmFolder.childEntity if getattr(v, "name", "") == "DC0_H0_VM1")
        WaitForTask(folder.MoveIntoFolder_Task([vm]))
    finally:
        Disconnect(si)
    snap = _connector(vcsim).fetch()
    assert [(p.key, p.name) for p in snap.projects] == [(folder._moId, "payments")]
    projects = {v.name: v.project for v in snap.vms}
    assert projects["DC0_H0_VM1"] == folder._moId and projects["DC0_H0_VM0"] == ""
    paged = _connector(vcsim, page_size=2).fetch()  # vcsim 0.24 ignores maxObjects: a sanity check only
    for kind in ("regions", "zones", "projects", "hosts", "networks", "vms", "interfaces"):
        assert sorted(map(repr, getattr(paged, kind))) == sorted(map(repr, getattr(snap, kind))), kind

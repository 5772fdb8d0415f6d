"""vSphere port mirroring sessions resolved to VM NICs, and the agent mapping built from them."""

from __future__ import annotations

import pytest

pytest.importorskip("pyVmomi")

from pyVmomi import vim  # noqa: E402

from cloudtap.agent.config import MirrorSection  # noqa: E402
from cloudtap.inventory.connectors.vsphere import VSphereConfig, VSphereConnector  # noqa: E402
from cloudtap.inventory.connectors.vsphere_mirror import agent_mirror_sessions, nic_ports, sessions_of  # noqa: E402

VSPAN = vim.dvs.VmwareDistributedVirtualSwitch.VspanSession
PORTS = vim.dvs.VmwareDistributedVirtualSwitch.VspanPorts


def _nic(key: int, mac: str, port_key: str | None, uuid: str = "50 2a") -> vim.vm.device.VirtualVmxnet3:
    backing = vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo(
        port=vim.dvs.PortConnection(switchUuid=uuid, portgroupKey="dvportgroup-13", portKey=port_key)
    )
    return vim.vm.device.VirtualVmxnet3(key=key, macAddress=mac, backing=backing)


def test_sessions_name_the_nics_of_their_source_ports() -> None:
    ports = [(*p, "vm-1") for p in nic_ports("vm-1", [_nic(4000, "00:50:56:AA:00:01", "12")])]
    ports += [(*p, "vm-2") for p in nic_ports("vm-2", [_nic(4000, "00:50:56:aa:00:02", "13"),
                                                        _nic(4001, "00:50:56:aa:00:03", None)])]  # fmt: skip
    ports += [(*p, "vm-9") for p in nic_ports("vm-9", [_nic(4000, "00:50:56:aa:00:09", "12", uuid="other")])]
    sessions = [
        VSPAN(key="s1", name="web-mirror", enabled=True, sessionType="encapsulatedRemoteMirrorSource",
              encapType="erspan3", erspanId=11, sourcePortTransmitted=PORTS(portKey=["12"]),
              sourcePortReceived=PORTS(portKey=["12", "13"]), destinationPort=PORTS(ipAddress=["10.9.0.5"])),
        VSPAN(key="s2", name="all", enabled=True, sessionType="encapsulatedRemoteMirrorSource", encapType="gre",
              erspanId=12, sourcePortReceived=PORTS(wildcardPortConnecteeType=["vmVnic"])),
        VSPAN(key="s3", name="off", enabled=False, erspanId=13, sourcePortReceived=PORTS(portKey=["12"])),
    ]  # fmt: skip
    got = sessions_of("dvs-9", "50 2a", sessions, ports)
    assert [(s.name, s.erspan_id, s.encap, s.vms, s.macs) for s in got] == [
        ("web-mirror", 11, "erspan3", ("vm-1", "vm-2"), ("00:50:56:aa:00:01", "00:50:56:aa:00:02")),
        ("all", 12, "gre", ("vm-1", "vm-2"), ("00:50:56:aa:00:01", "00:50:56:aa:00:02")),
        ("off", 13, "", ("vm-1",), ("00:50:56:aa:00:01",)),
    ]  # the other switch's port 12 (vm-9) and the NIC without a port are never sources here
    assert got[0].destinations == ("10.9.0.5",) and got[0].interfaces == ("vm-1/4000", "vm-2/4000")
    mapping = agent_mirror_sessions(got, {"vm-1": "web-01", "vm-2": "web-02"})
    assert mapping == {
        "session:11": {"name": "web-mirror", "vms": {"00:50:56:aa:00:01": "web-01", "00:50:56:aa:00:02": "web-02"}},
        "session:12": {"name": "all", "vms": {"00:50:56:aa:00:01": "web-01", "00:50:56:aa:00:02": "web-02"}},
    }
    MirrorSection.model_validate({"sessions": mapping})  # what an agent takes as its mirror section


def test_vcsim_has_no_sessions_and_the_fetch_reads_them_without_error(vcsim) -> None:  # type: ignore[no-untyped-def]
    # govmomi's simulator (0.24) keeps config.vspanSession empty and ignores it in ReconfigureDvs_Task.
    connector = VSphereConnector(VSphereConfig(host=vcsim.host, port=vcsim.port, username=vcsim.user,
                                               password=vcsim.password, insecure=True))  # fmt: skip
    snap = connector.fetch()
    assert snap.vms and connector.mirror_sessions == []

"""Mirrored traffic belongs to VMs: an agent in mirror mode receives ERSPAN (or VXLAN) copies of two
vCenter VMs' ports, its records go through the server's tagging with the vSphere inventory (vcsim), and
the stored flows name both VMs, their host and their project, like flows captured on tap ports."""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

pytest.importorskip("pyVmomi")

from scapy.layers.inet import IP, TCP  # noqa: E402
from scapy.layers.l2 import Ether  # noqa: E402

from cloudtap.agent.config import load_agent_config  # noqa: E402
from cloudtap.agent.runner import Agent  # noqa: E402
from cloudtap.agent.sinks import MemorySink  # noqa: E402
from cloudtap.inventory.connectors.vsphere import VSphereConfig, VSphereConnector  # noqa: E402
from cloudtap.inventory.store import InventoryStore  # noqa: E402
from cloudtap.inventory.tagging import Tagger  # noqa: E402
from cloudtap.server.ingest import Ingestor  # noqa: E402

VMS = {"DC0_H0_VM0": "00:50:56:0a:00:01", "DC0_H0_VM1": "00:50:56:0a:00:02"}  # the client, the server


def _prepare_vcenter(vcsim: Any) -> None:
    """Both VMs into folder (project) 'payments', each NIC with its own MAC (vcsim gives them one)."""
    from pyVim.connect import Disconnect, SmartConnect
    from pyVim.task import WaitForTask
    from pyVmomi import vim

    si = SmartConnect(host=vcsim.host, port=vcsim.port, user=vcsim.user, pwd=vcsim.password,
                      disableSslCertValidation=True)  # fmt: skip
    try:
        dc = si.RetrieveContent().rootFolder.childEntity[0]
        folder = dc.vmFolder.CreateFolder("payments")
        vms = [v for v in dc.vmFolder.childEntity if getattr(v, "name", "") in VMS]
        WaitForTask(folder.MoveIntoFolder_Task(vms))
        for vm in vms:
            nic = next(d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualEthernetCard))
            nic.macAddress, nic.addressType = VMS[vm.name], "manual"
            change = vim.vm.device.VirtualDeviceSpec(operation="edit", device=nic)
            WaitForTask(vm.ReconfigVM_Task(vim.vm.ConfigSpec(deviceChange=[change])))
    finally:
        Disconnect(si)


def _conversation(ips: dict[str, str]) -> list[tuple[str, bytes]]:
    """(sender VM, frame) of a TCP exchange between the two VMs: 10 requests, 10 answers."""
    (a, mac_a), (b, mac_b) = VMS.items()
    out = []
    for i in range(10):
        req = Ether(src=mac_a, dst=mac_b) / IP(src=ips[a], dst=ips[b], id=i) / TCP(
            sport=40000, dport=5432, seq=1000 + 100 * i, ack=1, flags="PA") / (b"q" * 100)  # fmt: skip
        rsp = Ether(src=mac_b, dst=mac_a) / IP(src=ips[b], dst=ips[a], id=500 + i) / TCP(
            sport=5432, dport=40000, seq=1, ack=1100 + 100 * i, flags="A")  # fmt: skip
        out += [(a, bytes(req)), (b, bytes(rsp))]
    return out


def _erspan2(frame: bytes, session: int, seq: int) -> bytes:
    return struct.pack("!BBHI", 0x10, 0, 0x88BE, seq) + struct.pack("!HHI", 1 << 12, session, 0) + frame


def _vxlan(frame: bytes, vni: int) -> bytes:
    return struct.pack("!II", 0x08000000, vni << 8) + frame


def _run_agent(tmp_path: Path, env: dict[str, str], send: Any) -> pa.Table:
    base = {
        "CLOUDTAP_AGENT__CAPTURE__MODE": "mirror",
        "CLOUDTAP_AGENT__CAPTURE__MIRROR_BIND": "127.0.0.1",
        "CLOUDTAP_AGENT__CAPTURE__MIRROR_DEDUP_MS": "5000",
        "CLOUDTAP_AGENT__OUTPUT__DIRECTORY": str(tmp_path / "out"),
        "CLOUDTAP_AGENT__CONTROL__PORT": "0",
        "CLOUDTAP_AGENT__CONTROL__SOCKET": "",
        "CLOUDTAP_AGENT__LIMITS__USE_CGROUP": "false",
        "CLOUDTAP_AGENT__LIMITS__MAX_MEMORY_MIB": "16384",
    }
    config = load_agent_config(None, env={**base, **env})
    sink = MemorySink()
    agent = Agent(config, sink=sink)
    assert agent.points.mirror is not None  # the runner builds it from config.mirror
    agent.start()
    runner = threading.Thread(target=agent.run, daemon=True)
    runner.start()
    try:
        deadline = time.monotonic() + 5
        while not agent.status().capturing and time.monotonic() < deadline:
            time.sleep(0.02)
        sent = send(agent)
        deadline = time.monotonic() + 10
        while agent.status().captured_packets < sent and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        agent.shutdown()
        runner.join(5)
    flows = sink.table("flows")
    assert flows is not None
    return flows


def _inventory(open_store: Any, vcsim: Any) -> InventoryStore:
    """The server's inventory, synced from vcsim (before the traffic, as a running server has it)."""
    inventory = InventoryStore(open_store())
    connector = VSphereConnector(VSphereConfig(host=vcsim.host, port=vcsim.port, username=vcsim.user,
                                               password=vcsim.password, insecure=True))  # fmt: skip
    inventory.apply(connector.fetch())
    return inventory


def _stored(inventory: InventoryStore, flows: pa.Table) -> list[dict[str, Any]]:
    """Ingest ``flows`` with tagging at ingest; the stored rows with VM, host and project names."""
    store = inventory.store
    Ingestor(store, tagger=Tagger(inventory)).ingest_tables({"flows": flows}, None)
    db = store.database
    names = {(r["kind"], r["id"]): r["name"]
             for r in store.query_arrow(f"SELECT kind, id, name FROM {db}.inventory_names").to_pylist()}  # fmt: skip
    ids = [f"{side}_{k}_id" for side in ("client", "server") for k in ("vm", "host", "project")]
    rows = store.query_arrow(
        f"SELECT {', '.join(ids)}, interface_name, vm_domain, vm_mac, packets_c2s, packets_s2c "
        f"FROM {db}.flow_log WHERE server_port = 5432"
    ).to_pylist()
    for r in rows:
        for col in ids:
            r[col.removesuffix("_id")] = names.get((col.split("_")[1], r[col]), "")
    return rows


def _check(rows: list[dict[str, Any]], labels: set[str]) -> None:
    assert rows  # today one row per direction: the meter keys on the kept copy's session / VNI (see docs)
    a, b = VMS
    for r in rows:  # whichever copy was kept, both sides are the VMs, on their host, in their project
        assert (r["client_vm"], r["server_vm"]) == (a, b), r
        assert r["client_host"] == r["server_host"] == "DC0_H0", r
        assert r["client_project"] == r["server_project"] == "payments", r
        assert (r["vm_domain"], r["vm_mac"]) in {(a, VMS[a]), (b, VMS[b])}, r
    assert {r["interface_name"] for r in rows} <= labels
    assert sum(r["packets_c2s"] for r in rows) == 10 and sum(r["packets_s2c"] for r in rows) == 10


def _sessions(kind: str) -> str:
    (a, mac_a), (b, mac_b) = VMS.items()
    return (f"{{'{kind}:{11 if kind == 'session' else 5001}': {{name: {a}-port, vms: {{'{mac_a}': {a}}}}}, "
            f"'{kind}:{12 if kind == 'session' else 5002}': {{name: {b}-port, vms: {{'{mac_b}': {b}}}}}}}")  # fmt: skip


@pytest.mark.skipif(os.geteuid() != 0, reason="raw GRE sockets need root")
def test_erspan_copies_of_two_vms_are_stored_with_both_vms_and_their_project(
    tmp_path: Path, vcsim: Any, open_store: Any
) -> None:
    _prepare_vcenter(vcsim)
    ips = _guest_ips(vcsim)
    inventory = _inventory(open_store, vcsim)
    session = {"DC0_H0_VM0": 11, "DC0_H0_VM1": 12}

    def send(_agent: Agent) -> int:
        with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_GRE) as tx:
            for seq, (sender, frame) in enumerate(_conversation(ips)):  # the sender's port first, then the peer's
                receiver = next(v for v in VMS if v != sender)
                tx.sendto(_erspan2(frame, session[sender], seq), ("127.0.0.1", 0))
                tx.sendto(_erspan2(frame, session[receiver], seq), ("127.0.0.1", 0))
        return 40

    env = {"CLOUDTAP_AGENT__CAPTURE__MIRROR_KIND": "gre", "CLOUDTAP_AGENT__MIRROR__SESSIONS": _sessions("session")}
    flows = _run_agent(tmp_path, env, send)
    assert set(flows["tunnel_type"].to_pylist()) == {"erspan2"}
    _check(_stored(inventory, flows), {f"{v}-port" for v in VMS})


def test_vxlan_copies_of_two_vms_are_stored_with_both_vms_and_their_project(
    tmp_path: Path, vcsim: Any, open_store: Any
) -> None:
    _prepare_vcenter(vcsim)
    ips = _guest_ips(vcsim)
    inventory = _inventory(open_store, vcsim)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    vni = {"DC0_H0_VM0": 5001, "DC0_H0_VM1": 5002}

    def send(_agent: Agent) -> int:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            for sender, frame in _conversation(ips):
                receiver = next(v for v in VMS if v != sender)
                tx.sendto(_vxlan(frame, vni[sender]), ("127.0.0.1", port))
                tx.sendto(_vxlan(frame, vni[receiver]), ("127.0.0.1", port))
        return 40

    env = {"CLOUDTAP_AGENT__CAPTURE__MIRROR_KIND": "vxlan", "CLOUDTAP_AGENT__CAPTURE__MIRROR_PORT": str(port),
           "CLOUDTAP_AGENT__MIRROR__SESSIONS": _sessions("vni")}  # fmt: skip
    flows = _run_agent(tmp_path, env, send)
    assert set(flows["tunnel_type"].to_pylist()) == {"vxlan"}
    _check(_stored(inventory, flows), {f"{v}-port" for v in VMS})


def _guest_ips(vcsim: Any) -> dict[str, str]:
    """The VMs' guest IPs as the vSphere connector reads them."""
    snap = VSphereConnector(VSphereConfig(host=vcsim.host, port=vcsim.port, username=vcsim.user,
                                          password=vcsim.password, insecure=True)).fetch()  # fmt: skip
    names = {v.key: v.name for v in snap.vms}
    ips = {names[i.vm]: i.ips[0] for i in snap.interfaces if i.vm in names and i.ips}
    assert {names[i.vm]: i.mac for i in snap.interfaces if names.get(i.vm) in VMS} == VMS  # distinct MACs now
    return {v: ips[v] for v in VMS}

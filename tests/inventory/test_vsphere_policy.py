"""A policy written in cloud terms follows a VM that vMotion moves (vcsim → inventory → controller)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("pyVmomi")

from cloudtap.inventory.connectors.vsphere import VSphereConfig, VSphereConnector  # noqa: E402
from cloudtap.inventory.store import InventoryStore  # noqa: E402
from cloudtap.server.controller.policy import Policy  # noqa: E402
from cloudtap.server.controller.service import Controller  # noqa: E402
from cloudtap.server.settings import ControllerSection  # noqa: E402

VM = "DC0_C0_RP0_VM0"


def _relocate(sim, vm_name: str, away_from: str) -> str:
    """Move ``vm_name`` to another cluster host with pyVmomi; returns the new host's name."""
    from pyVim.connect import Disconnect, SmartConnect
    from pyVim.task import WaitForTask
    from pyVmomi import vim

    si = SmartConnect(
        host=sim.host, port=sim.port, user=sim.user, pwd=sim.password, disableSslCertValidation=True
    )
    try:
        content = si.RetrieveContent()
        view = content.viewManager.CreateContainerView(
            content.rootFolder, [vim.VirtualMachine, vim.HostSystem], True
        )
        objs = {o.name: o for o in view.view}
        view.Destroy()
        target = next(o for n, o in sorted(objs.items()) if n.startswith("DC0_C0_H") and n != away_from)
        spec = vim.vm.RelocateSpec(host=target, pool=target.parent.resourcePool)
        WaitForTask(objs[vm_name].RelocateVM_Task(spec=spec))
        return str(target.name)
    finally:
        Disconnect(si)


def test_policy_moves_to_the_new_hosts_agent_within_one_sync(vcsim, tmp_path: Path) -> None:
    connector = VSphereConnector(
        VSphereConfig(
            host=vcsim.host, port=vcsim.port, username=vcsim.user, password=vcsim.password, insecure=True
        )
    )
    inventory = InventoryStore()  # in memory: the same code the server runs over ClickHouse
    inventory.apply(connector.fetch())
    ctl = Controller(ControllerSection(), tmp_path / "ctl.sqlite", inventory=inventory.current)
    try:
        hosts = [h.name for h in inventory.current().hosts]
        agents = {
            h: str(
                ctl.register(None, {"name": f"agent-{h}", "hostname": h, "machine_id": f"m-{h}"})["agent_id"]
            )
            for h in hosts
        }
        ctl.put_policy(Policy(name="vm0", select={"vm": VM}, bpf="tcp", action={"store_packets": True}))
        snap = inventory.current()
        vm = next(v for v in snap.vms if v.name == VM)
        old_host = next(h.name for h in snap.hosts if h.key == vm.host)
        compiled = ctl.compiled()
        assert compiled[agents[old_host]]["vms"] == [VM] and compiled[agents[old_host]]["store_packets"]
        mac = next(i.mac for i in snap.interfaces if i.vm == vm.key)
        assert mac in compiled[agents[old_host]]["macs"]
        before = {a: ctl.registry.get(a).config_version for a in agents.values()}

        new_host = _relocate(vcsim, VM, old_host)  # vMotion
        changes = inventory.apply(connector.fetch())  # one inventory sync...
        summary = ctl.sync()  # ...and the controller's recompile

        assert changes.changed.get("vm", 0) >= 1
        compiled = ctl.compiled()
        assert compiled[agents[new_host]]["vms"] == [VM] and mac in compiled[agents[new_host]]["macs"]
        assert compiled[agents[old_host]]["vms"] == [] and compiled[agents[old_host]]["capture"] is False
        assert set(summary["changed"]) == {f"agent-{old_host}", f"agent-{new_host}"}  # by agent name
        after = {a: ctl.registry.get(a).config_version for a in agents.values()}
        bumped = {a for a in agents.values() if after[a] != before[a]}
        assert bumped == {agents[old_host], agents[new_host]}  # the others' agents get nothing new
        # history: where the VM was before the move is still known
        records = inventory.history("vm", vm.key)
        assert len(records) == 2 and records[0].valid_to == records[1].valid_from
    finally:
        ctl.close()

"""Proof: an inventory learned from one agent alone answers ``project=`` and ``vm=`` queries.

A virtual hypervisor (namespaces as VMs, their veth ends as taps) whose two VMs have nova-style
libvirt domain XML (instance name, project, flavor, owner) and a third port with none; the agent
captures the taps, registers with a real server (uvicorn, chDB store) whose inventory has no cloud API
nor static file, reports its VMs and the IPs it saw, and ships its flows. The inventory then holds the
nova projects, the VMs by instance name, their interfaces with the IPs seen, and flow queries by project
and by VM name (the query API, the app's name resolver) return exactly the traffic of those VMs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from access_helpers import grant
from cloudtap.agent.config import load_agent_config
from cloudtap.agent.runner import Agent
from cloudtap.server.api.app import create_app
from cloudtap.server.settings import ServerSettings
from netns import VM, VirtualNetwork, needs_netns
from uvicorn_thread import serve_in_thread

BOOT = "inventory-live-bootstrap"
SHOP, BILLING = "5a0c1d2e3f404a5b8c6d7e8f90a1b2c3", "6b1d2e3f40514b6c9d7e8f90a1b2c3d4"
NOVA_XML = """<domain type='kvm'>
  <name>{domain}</name>
  <uuid>{uuid}</uuid>
  <metadata>
    <nova:instance xmlns:nova="http://openstack.org/xmlns/libvirt/nova/1.1">
      <nova:package version="27.1.0"/>
      <nova:name>{name}</nova:name>
      <nova:flavor name="m1.small"><nova:vcpus>1</nova:vcpus></nova:flavor>
      <nova:owner>
        <nova:user uuid="0b0c7a1e9d4f4c21a3e8f6b2d9c07e14">alice</nova:user>
        <nova:project uuid="{project_id}">{project}</nova:project>
      </nova:owner>
    </nova:instance>
  </metadata>
  <devices>
    <interface type='bridge'>
      <mac address='{mac}'/>
      <source bridge='br-int'/>
      <target dev='{tap}'/>
      <model type='virtio'/>
    </interface>
  </devices>
</domain>
"""


def write_domain(directory: Path, vm: VM, domain: str, uuid: str, name: str, project_id: str, project: str) -> None:
    text = NOVA_XML.format(domain=domain, uuid=uuid, name=name, project_id=project_id, project=project, mac=vm.mac,
                           tap=vm.tap_name)  # fmt: skip
    (directory / f"{domain}.xml").write_text(text)


def agent_config(tmp: Path, pattern: str, url: str):  # type: ignore[no-untyped-def]
    env = {
        "CLOUDTAP_AGENT__AGENT_ID": "agent-hv-live",
        "CLOUDTAP_AGENT__CAPTURE__INTERFACE_PATTERN": pattern,
        "CLOUDTAP_AGENT__CAPTURE__RING_BLOCK_SIZE": str(1 << 18),
        "CLOUDTAP_AGENT__CAPTURE__RING_BLOCK_COUNT": "8",
        "CLOUDTAP_AGENT__CAPTURE__LIBVIRT_DIRS": str([str(tmp / "libvirt")]),
        "CLOUDTAP_AGENT__METER__IDLE_TIMEOUT_S": "1",
        "CLOUDTAP_AGENT__METER__KEY_BY_INTERFACE": "true",
        "CLOUDTAP_AGENT__METER__MAX_FLOWS": "65536",
        "CLOUDTAP_AGENT__OUTPUT__SINK": "server",
        "CLOUDTAP_AGENT__OUTPUT__SERVER_URL": url,
        "CLOUDTAP_AGENT__OUTPUT__SPOOL_DIRECTORY": str(tmp / "spool"),
        "CLOUDTAP_AGENT__OUTPUT__FLUSH_INTERVAL_S": "0.3",
        "CLOUDTAP_AGENT__OUTPUT__DIRECTORY": str(tmp / "out"),
        "CLOUDTAP_AGENT__CONTROLLER__URL": url,
        "CLOUDTAP_AGENT__CONTROLLER__TOKEN": BOOT,
        "CLOUDTAP_AGENT__CONTROLLER__HEARTBEAT_S": "0.5",
        "CLOUDTAP_AGENT__CONTROLLER__HOST_NAME": "hv-live",
        "CLOUDTAP_AGENT__CONTROLLER__CACHE_FILE": str(tmp / "controller.json"),
        "CLOUDTAP_AGENT__CONTROLLER__CREDENTIAL_FILE": str(tmp / "credential.json"),
        "CLOUDTAP_AGENT__CONTROL__PORT": "0",
        "CLOUDTAP_AGENT__CONTROL__SOCKET": "",
        "CLOUDTAP_AGENT__LIMITS__USE_CGROUP": "false",
        "CLOUDTAP_AGENT__LIMITS__MAX_MEMORY_MIB": "16384",
    }
    return load_agent_config(None, env=env)


def wait_for(what: str, fetch: Callable[[], Any], ok: Callable[[Any], bool], timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = fetch()
        if ok(value):
            return value
        assert time.monotonic() < deadline, f"{what}: last seen {value!r}"
        time.sleep(0.2)


@needs_netns
def test_inventory_learned_from_one_agent_answers_project_and_vm_queries(open_store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    store = open_store()
    settings = ServerSettings.model_validate({
        "storage": {"database": store.database},
        "inventory": {"sync_period_s": 1},  # no cloud API, no static file: agents only
        "controller": {"db_path": str(tmp_path / "ctl.sqlite"), "token": BOOT},
        "ingest": {"wal_dir": str(tmp_path / "wal")},
        "auth": {"db_path": str(tmp_path / "access.sqlite"), "audit_log": str(tmp_path / "audit.jsonl")},
    })  # fmt: skip
    app = create_app(settings, store)
    admin = grant(app)
    (tmp_path / "libvirt").mkdir()
    with VirtualNetwork(prefix="cinv") as net, serve_in_thread(app) as url, httpx.Client(
        base_url=url, headers=admin, timeout=30
    ) as http:
        web = net.add_vm("web", "10.83.0.1/24")
        db = net.add_vm("db", "10.83.0.2/24")
        other = net.add_vm("other", "10.83.0.3/24")  # a port without domain XML: not a VM the agent knows
        web_uuid, db_uuid = "11111111-2222-4333-8444-555555555501", "11111111-2222-4333-8444-555555555502"
        write_domain(tmp_path / "libvirt", web, "instance-00000101", web_uuid, "shop-web-1", SHOP, "shop")
        write_domain(tmp_path / "libvirt", db, "instance-00000102", db_uuid, "billing-db-1", BILLING, "billing")

        def items(kind: str) -> list[dict[str, Any]]:
            return list(http.get(f"/api/v1/inventory/{kind}").json()["items"])

        agent = Agent(agent_config(tmp_path, f"^tap{net.uid}", url))
        runner = threading.Thread(target=agent.run, daemon=True)
        runner.start()
        try:
            vms = wait_for("VMs learned", lambda: {v["name"]: v for v in items("vm")},
                           lambda d: set(d) == {"shop-web-1", "billing-db-1"}, timeout_s=90)  # fmt: skip
            # the first words of each VM teach the agent its IP (records after the 1 s idle timeout); a
            # heartbeat and a sync later the inventory lists it on the VM's interface
            # (sent again at every look: the agent may not have its sockets on the taps yet when the VMs
            # are known, and a busy machine may take a while)
            def learned() -> dict[str, Any]:
                with db.udp_sink(5001), web.udp_sink(7001):
                    web.send_udp(db.ip, 5001, count=1, sport=40001)
                    db.send_udp(web.ip, 7001, count=1, sport=42001)
                return {i["mac"]: i for i in items("interface")}

            ifaces = wait_for("IPs learned", learned, lambda d: d.get(web.mac, {}).get("ips") == [web.ip]
                              and d.get(db.mac, {}).get("ips") == [db.ip], timeout_s=90)  # fmt: skip
            # from now on both ends of a flow are tagged, on every tap
            with db.udp_sink(5000) as got5000, db.udp_sink(6000) as got6000, web.udp_sink(7000) as got7000:
                web.send_udp(db.ip, 5000, count=40, sport=40000)
                other.send_udp(db.ip, 6000, count=25, sport=41000)
                db.send_udp(web.ip, 7000, count=10, sport=42000)
            assert (got5000.received, got6000.received, got7000.received) == (40, 25, 10)

            def flows_of(**names: str) -> set[tuple[Any, ...]]:
                answer = http.get("/api/v1/query/flows", params={
                    "since": "1h", "limit": 1000, "columns": "client_ip,server_ip,server_port,packets_c2s,interface_name",
                    "filter": "server_port=5000,6000,7000", **names}).json()  # fmt: skip
                return {tuple(row) for row in answer.get("rows", [])}

            on_db = wait_for("flows stored", lambda: flows_of(vm="billing-db-1"), lambda rows: len(rows) == 6,
                             timeout_s=90)  # fmt: skip
            shop = flows_of(project="shop")
            web_flows = flows_of(vm="shop-web-1")
            billing = flows_of(project="billing")
            projects = {p["name"]: p for p in items("project")}
        finally:
            agent.shutdown()
            runner.join(10)
    # the inventory: nova projects (keyed by their ids), VMs by instance name (keyed by the domain uuid)
    assert {name: p["key"] for name, p in projects.items()} == {"shop": SHOP, "billing": BILLING}
    assert (vms["shop-web-1"]["key"], vms["shop-web-1"]["project"], vms["shop-web-1"]["host"]) == (web_uuid, SHOP, "hv-live")
    assert vms["billing-db-1"]["tags"] == ["flavor=m1.small", "user_name=alice"]
    assert ifaces[web.mac]["vm"] == web_uuid and ifaces[web.mac]["device"] == web.tap_name
    assert other.mac not in ifaces  # no domain XML, no VM MAC: the agent does not take it for a VM
    # flows: one record per observation point (the taps both ends are on)
    to_db = {(web.ip, db.ip, 5000, 40, web.tap_name), (web.ip, db.ip, 5000, 40, db.tap_name)}
    from_other = {(other.ip, db.ip, 6000, 25, other.tap_name), (other.ip, db.ip, 6000, 25, db.tap_name)}
    to_web = {(db.ip, web.ip, 7000, 10, db.tap_name), (db.ip, web.ip, 7000, 10, web.tap_name)}
    assert shop == web_flows == to_db | to_web
    assert billing == on_db == to_db | from_other | to_web

"""FleetTargets: VM -> the agents and interfaces that saw it (flow records, inventory history, controller).

Unit tests run on a chDB store holding tagged flow rows, a real InventoryStore with history and a real
Controller; the end-to-end test runs ``cloudtap server run`` (static inventory), a replay agent that
registers, heartbeats its control URL and ships its flows, and ``cloudtap pcap --vm``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import pyarrow as pa
import pytest
from pcap_env import tcpdump_split

from access_helpers import grant
from capture_frames import frames_of
from cloudtap.inventory.model import VM, Host, Interface, Network, Project, Region, Snapshot, Subnet
from cloudtap.inventory.names_store import InventoryNames
from cloudtap.inventory.store import InventoryStore
from cloudtap.inventory.tagging import Tagger
from cloudtap.meter.records import flows_to_arrow
from cloudtap.schema.flow import FLOW_DTYPE
from cloudtap.server.controller.service import Controller
from cloudtap.server.controller.status import HeartbeatReport, VmInterface
from cloudtap.server.pcap.errors import PcapNotFound, PcapRequestError
from cloudtap.server.pcap.fleet_targets import AppFleetTargets, FleetTargets
from cloudtap.server.pcap.targets import Target
from cloudtap.server.settings import ControllerSection
from cloudtap.server.store.base import BatchKey

T0 = 1_800_000_000_000_000_000
MIN = 60_000_000_000
HOUR = 60 * MIN
DB_MAC, WEB_MAC, SOLO_MAC = "fa:16:3e:00:00:01", "fa:16:3e:00:00:02", "fa:16:3e:00:00:03"
DB_BPF = "host 10.0.0.5"
REPO = Path(__file__).resolve().parents[3]


def cloud(taken_at: int, renamed: bool = False) -> Snapshot:
    """db-01 on hv-01 (tap-db), web-01 on hv-02 (renamed web-99 later), solo-01 on hv-03 (device unknown)."""
    return Snapshot(
        source="static",
        taken_at=taken_at,
        regions=[Region("eu", "eu")],
        projects=[Project("p", "p", "eu")],
        hosts=[
            Host("hv-01", "hv-01", region="eu", address="192.168.0.11"),
            Host("hv-02", "hv-02", region="eu"),
            Host("hv-03", "hv-03.example.net", region="eu"),
        ],  # fmt: skip
        networks=[Network("net", "net", "p")],
        subnets=[Subnet("sub", "sub", "10.0.0.0/24", "net", "p")],
        vms=[
            VM("p/db", "db-01", "p", "hv-01", "ACTIVE"),
            VM("p/web", "web-99" if renamed else "web-01", "p", "hv-02"),
            VM("p/solo", "solo-01", "p", "hv-03"),
        ],  # fmt: skip
        interfaces=[
            Interface("i1", DB_MAC, ("10.0.0.5",), "p/db", "net", "sub", device="tap-db"),
            Interface("i2", WEB_MAC, ("10.0.0.9",), "p/web", "net", "sub", device="tap-web"),
            Interface("i3", SOLO_MAC, ("10.0.0.20",), "p/solo", "net", "sub"),
        ],
    )


def flows(rows: list[tuple[str, str, int, int, str, str, str]]) -> pa.Table:
    """Flow records ``(client, server, first_ns, last_ns, agent, interface, vm_mac)`` as agents ship them."""
    recs = np.zeros(len(rows), FLOW_DTYPE)
    recs["first_ns"] = recs["start_ns"] = [r[2] for r in rows]
    recs["last_ns"] = [r[3] for r in rows]
    recs["proto"], recs["ip_ver"], recs["packets_c2s"] = 6, 4, 1
    table = flows_to_arrow(recs)
    for col, i in (("client_ip", 0), ("server_ip", 1)):
        table = table.set_column(
            table.schema.get_field_index(col), col, pa.array([r[i] for r in rows], pa.string())
        )
    for col, i in (("agent_id", 4), ("interface_name", 5), ("vm_mac", 6)):
        table = table.append_column(col, pa.array([r[i] for r in rows], pa.string()))
    return table.append_column("vm_domain", pa.array([""] * len(rows), pa.string()))


def register(
    ctl: Controller, name: str, hostname: str, url: str = "", ifaces: tuple[tuple[str, str], ...] = ()
) -> None:
    """Register an agent and send one heartbeat from the address of its control URL (so the URL passes)."""
    ctl.register(None, {"name": name, "hostname": hostname, "machine_id": f"m-{name}"})
    rec = ctl.registry.find(name)
    assert rec is not None
    report = HeartbeatReport(control_url=url, interfaces=[VmInterface(name=n, mac=m) for n, m in ifaces])
    ctl.heartbeat(rec, report, peer=urlsplit(url).hostname or "")


def target(ctl: Controller, agent: str, url: str, interfaces: tuple[str, ...], host: str, bpf: str | None = None) -> Target:
    """The target the controller builds for ``agent`` (its id; the key is not compared)."""
    rec = ctl.registry.find(agent)
    assert rec is not None
    return Target(url, interfaces, host, bpf, rec.id)


@pytest.fixture
def fleet(open_store: Callable[..., Any], tmp_path: Path) -> Iterator[SimpleNamespace]:
    store = open_store()
    inventory = InventoryStore(store, backdate_first_sync=True)
    inventory.apply(cloud(T0))
    inventory.apply(cloud(T0 + HOUR, renamed=True))
    batch = flows([
        ("10.0.0.5", "10.0.0.9", T0 + 1 * MIN, T0 + 2 * MIN, "agent-a", "tap-db", DB_MAC),  # db's own tap
        ("10.0.0.5", "10.0.0.9", T0 + 1 * MIN, T0 + 2 * MIN, "agent-b", "tap-web", WEB_MAC),  # the peer's tap
        ("10.0.0.5", "10.0.0.9", T0 + 3 * HOUR, T0 + 3 * HOUR + MIN, "agent-c", "mirror0", ""),  # later only
        ("10.0.0.20", "10.0.0.9", T0 + 5 * MIN, T0 + 6 * MIN, "retired", "eth9", ""),  # an agent gone since
        ("10.0.0.9", "10.0.0.77", T0 + 2 * HOUR, T0 + 2 * HOUR + MIN, "agent-b", "", ""),  # web-99, no interface
    ])  # fmt: skip
    store.insert(Tagger(inventory).tag_tables({"flows": batch}), BatchKey("fleet-test", 1))
    ctl = Controller(ControllerSection(), tmp_path / "controller.sqlite", inventory.current, store)
    register(ctl, "agent-a", "hv-01", "http://127.0.0.1:9/")  # nothing listens there
    register(ctl, "agent-b", "hv-02", "http://10.1.0.2:9477")
    register(ctl, "agent-c", "hv-04")  # an agent that reports no control URL
    register(
        ctl,
        "agent-solo",
        "hv-03",
        "http://10.1.0.3:9477",
        (("vnet7", SOLO_MAC), ("vnet8", "fa:16:3e:99:99:99")),
    )
    names = InventoryNames(inventory)
    try:
        yield SimpleNamespace(store=store, inventory=inventory, names=names, ctl=ctl,
                              targets=FleetTargets(store, names, ctl))  # fmt: skip
    finally:
        ctl.close()


def test_own_tap_is_read_whole_and_a_peer_tap_is_filtered(fleet: SimpleNamespace) -> None:
    got = fleet.targets.for_vm("db-01", T0, T0 + 10 * MIN)
    assert got == [
        target(fleet.ctl, "agent-a", "http://127.0.0.1:9", ("tap-db",), "hv-01"),
        target(fleet.ctl, "agent-b", "http://10.1.0.2:9477", ("tap-web",), "hv-02", DB_BPF),
    ]
    keys = [fleet.ctl.control_key(t.agent_id) for t in got]
    assert [t.key for t in got] == keys and all(keys) and keys[0] not in repr(got)  # sent, never shown
    assert fleet.targets.for_vm("db-*", T0, T0 + 10 * MIN) == got  # globs
    # the window decides: records overlapping [from, to) only (the 2-minute flow ends exactly at from)
    assert fleet.targets.for_vm("db-01", T0 + 2 * MIN, T0 + 3 * MIN) == got
    later = fleet.targets.subject("db-01", T0 + 2 * MIN + 1, T0 + HOUR)
    assert later.ips == {"10.0.0.5"} and later.macs == {DB_MAC} and set(later.hosts) == {"hv-01"}
    assert fleet.targets.seen(later, T0 + 2 * MIN + 1, T0 + HOUR) == []


def test_no_record_falls_back_to_the_agent_on_the_vm_host(fleet: SimpleNamespace) -> None:
    # db-01 has no record after 2 min, but agent-a runs on its host hv-01 and knows its device
    got = fleet.targets.for_vm("db-01", T0 + 20 * MIN, T0 + 30 * MIN)
    assert got == [target(fleet.ctl, "agent-a", "http://127.0.0.1:9", ("tap-db",), "hv-01")]


def test_unreachable_recorders_fall_back_to_the_host_agent(fleet: SimpleNamespace) -> None:
    # solo-01 was seen only by 'retired' (not registered); hv-03.example.net runs agent-solo (short name hv-03),
    # which reports the VM's MAC behind vnet7
    got = fleet.targets.for_vm("solo-01", T0, T0 + 10 * MIN)
    assert got == [target(fleet.ctl, "agent-solo", "http://10.1.0.3:9477", ("vnet7",), "hv-03")]
    # an IP works like a VM name (records matched by address, the VM holding it gives host and MAC)
    assert fleet.targets.for_vm("10.0.0.20", T0, T0 + 10 * MIN) == got


def test_an_agent_without_a_control_url_is_a_clear_error(fleet: SimpleNamespace) -> None:
    # three hours later db-01 was seen by agent-c only (no URL): the host fallback (agent-a on hv-01) answers
    assert fleet.targets.for_vm("db-01", T0 + 3 * HOUR, T0 + 4 * HOUR) == [
        target(fleet.ctl, "agent-a", "http://127.0.0.1:9", ("tap-db",), "hv-01")
    ]
    fleet.ctl.registry.remove(fleet.ctl.registry.find("agent-a").id)
    with pytest.raises(PcapRequestError, match="agent 'agent-c' .*no accepted control URL.*advertise_url"):
        fleet.targets.for_vm("db-01", T0 + 3 * HOUR, T0 + 4 * HOUR)
    # a mix of reachable and unreachable recorders is refused rather than silently incomplete
    register(fleet.ctl, "agent-a", "hv-09", "http://127.0.0.1:9")
    fleet.store.insert(Tagger(fleet.inventory).tag_tables({"flows": flows([
        ("10.0.0.5", "10.0.0.9", T0 + 3 * HOUR, T0 + 3 * HOUR + MIN, "agent-a", "tap-db", DB_MAC)])}),
        BatchKey("fleet-test", 2))  # fmt: skip
    with pytest.raises(PcapRequestError, match="cannot reach every agent that captured VM 'db-01'"):
        fleet.targets.for_vm("db-01", T0 + 3 * HOUR, T0 + 4 * HOUR)


def test_names_are_resolved_as_they_were_in_the_window(fleet: SimpleNamespace) -> None:
    with pytest.raises(PcapNotFound, match="did not exist between"):
        fleet.targets.for_vm("web-99", T0, T0 + 10 * MIN)  # renamed at T0 + 1 h
    with pytest.raises(PcapNotFound, match="no VM named 'nope'"):
        fleet.targets.for_vm("nope", T0, T0 + 10 * MIN)
    # web-99's record carries no interface name: the whole agent, filtered on the VM's address
    assert fleet.targets.for_vm("web-99", T0 + 2 * HOUR, T0 + 3 * HOUR) == [
        target(fleet.ctl, "agent-b", "http://10.1.0.2:9477", (), "hv-02", "host 10.0.0.9")
    ]
    # a window spanning the rename knows the VM under its old name too
    assert fleet.targets.for_vm("web-01", T0 + 30 * MIN, T0 + 3 * HOUR)[0].url == "http://10.1.0.2:9477"


def test_no_agent_anywhere_is_not_found(fleet: SimpleNamespace) -> None:
    fleet.ctl.registry.remove(fleet.ctl.registry.find("agent-solo").id)
    with pytest.raises(
        PcapNotFound, match="no registered agent with a control URL runs on its host hv-03.example.net"
    ):
        fleet.targets.for_vm("solo-01", T0 + HOUR, T0 + 2 * HOUR)


def test_targets_of_registered_agents_only_at_their_checked_urls(fleet: SimpleNamespace) -> None:
    got = fleet.targets.targets_for_agents(["agent-b", "hv-03"], ["tap-*"])
    assert got == [target(fleet.ctl, "agent-b", "http://10.1.0.2:9477", ("tap-*",), "hv-02"),
                   target(fleet.ctl, "agent-solo", "http://10.1.0.3:9477", ("tap-*",), "hv-03")]  # fmt: skip
    assert all(t.key and t.key == fleet.ctl.control_key(t.agent_id) for t in got)
    pairs = fleet.targets.targets_for_agents([("agent-b", ["tap-web"]), "agent-solo"])  # per-agent interfaces
    assert [t.interfaces for t in pairs] == [("tap-web",), ()]
    with pytest.raises(PcapRequestError, match="no registered agent .*'ghost'"):
        fleet.targets.targets_for_agents(["ghost"])
    with pytest.raises(PcapRequestError, match="agent 'agent-c' .*no accepted control URL .*reported none"):
        fleet.targets.targets_for_agents(["agent-c"])
    rec = fleet.ctl.registry.find("agent-b")
    fleet.ctl.heartbeat(rec, HeartbeatReport(control_url="http://10.66.0.1:9477"), peer="10.1.0.2")  # not its address
    with pytest.raises(PcapRequestError, match="agent 'agent-b' .*10.66.0.1 is neither the address"):
        fleet.targets.targets_for_agents(["agent-b"])
    with pytest.raises(PcapRequestError, match="agent 'agent-b'"):
        fleet.targets.for_vm("db-01", T0, T0 + 10 * MIN)  # it saw db-01, but may not be asked any more


def test_app_targets_need_an_inventory_and_a_controller(fleet: SimpleNamespace, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from cloudtap.server.api.app import create_app
    from cloudtap.server.settings import ServerSettings

    settings = ServerSettings.model_validate({"auth": {"audit_log": str(tmp_path / "audit.jsonl"),
                                                       "db_path": str(tmp_path / "access.sqlite")}})  # fmt: skip
    app = create_app(settings, fleet.store)
    admin = grant(app)
    assert isinstance(app.state.pcap_targets, AppFleetTargets)
    with pytest.raises(PcapRequestError, match="no inventory"):
        app.state.pcap_targets.for_vm("db-01", T0, T0 + MIN)
    app.state.names = fleet.names
    with pytest.raises(PcapRequestError, match="no controller"):
        app.state.pcap_targets.for_vm("db-01", T0, T0 + MIN)
    app.state.controller = fleet.ctl
    assert len(app.state.pcap_targets.for_vm("db-01", T0, T0 + 10 * MIN)) == 2
    client = TestClient(app, headers=admin)  # no lifespan: the state set above is used
    r = client.post("/api/v1/pcap", json={"vm": "nope", "from": T0, "to": T0 + MIN})
    assert r.status_code == 404 and "no VM named 'nope'" in r.json()["detail"]
    r = client.post("/api/v1/pcap", json={"vm": "db-01", "from": T0 + 3 * HOUR, "to": T0 + 4 * HOUR})
    assert r.status_code == 502 and "127.0.0.1:9" in r.json()["detail"]  # agent-a's URL answers nothing


def test_agent_advertises_its_control_url() -> None:
    from cloudtap.agent.controller_client import advertised_control_url

    def agent(listen: str, advertise: str | None = None) -> Any:
        config = SimpleNamespace(control=SimpleNamespace(advertise_url=advertise))
        return SimpleNamespace(
            config=config, control=SimpleNamespace(httpd=SimpleNamespace(server_address=(listen, 9477)))
        )

    assert advertised_control_url(agent("127.0.0.1"), "http://127.0.0.1:8470") == "http://127.0.0.1:9477"
    assert advertised_control_url(agent("0.0.0.0"), "http://127.0.0.1:8470") == "http://127.0.0.1:9477"
    assert advertised_control_url(agent("::1"), "http://[::1]:8470") == "http://[::1]:9477"
    assert advertised_control_url(agent("0.0.0.0", "http://hv-7.mgmt:9477/"), "") == "http://hv-7.mgmt:9477"
    assert advertised_control_url(SimpleNamespace(config=agent("x").config, control=None), "") == ""


# -- end to end ---------------------------------------------------------------------------------------------
def _wait(what: str, check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.slow
def test_cli_pcap_of_a_vm_through_server_controller_and_agent(tmp_path: Path) -> None:
    from cloudtap.agent.config import load_agent_config
    from cloudtap.agent.runner import Agent

    cli = [str(Path(sys.executable).with_name("cloudtap"))]
    env = {**os.environ, "NUMBA_CACHE_DIR": os.environ.get("NUMBA_CACHE_DIR", str(REPO / ".numba-cache"))}
    subprocess.run([*cli, "synth", "small-cloud", "--duration", "2m", "-q", "--inventory", str(tmp_path / "inv.yaml"),
                    "-o", str(tmp_path / "cloud.pcap")], check=True, env=env, capture_output=True)  # fmt: skip
    server_env = {**env, "CLOUDTAP_SERVER__INVENTORY__STATIC_FILE": str(tmp_path / "inv.yaml"),
                  "CLOUDTAP_SERVER__API__STATUS_FILE": str(tmp_path / "server.url"),
                  "CLOUDTAP_SERVER__AUTH__ENABLED": "false",  # loopback only: the CLI needs no login here
                  "CLOUDTAP_SERVER__AUTH__AUDIT_LOG": str(tmp_path / "audit.jsonl")}  # fmt: skip
    server = subprocess.Popen([*cli, "server", "run", "--data", str(tmp_path / "data"), "--port", "0"], env=server_env,
                              stdout=subprocess.DEVNULL, stderr=open(tmp_path / "server.log", "wb"))  # fmt: skip
    agent: Any = None
    thread: threading.Thread | None = None
    try:
        url = _wait(
            "the server",
            lambda: (tmp_path / "server.url").is_file() and (tmp_path / "server.url").read_text().strip(),
        )
        _wait("the server's API", lambda: _answers(f"{url}/api/v1/health"))
        agent_env = {
            "CLOUDTAP_AGENT__AGENT_ID": "agent-hv-01", "CLOUDTAP_AGENT__CAPTURE__MODE": "replay",
            "CLOUDTAP_AGENT__CAPTURE__REPLAY_FILE": str(tmp_path / "cloud.pcap"),
            "CLOUDTAP_AGENT__CAPTURE__REPLAY_STAY": "true",
            "CLOUDTAP_AGENT__OUTPUT__SINK": "server", "CLOUDTAP_AGENT__OUTPUT__SERVER_URL": url,
            "CLOUDTAP_AGENT__OUTPUT__SPOOL_DIRECTORY": str(tmp_path / "spool"),
            "CLOUDTAP_AGENT__OUTPUT__DIRECTORY": str(tmp_path / "out"), "CLOUDTAP_AGENT__CONTROL__PORT": "0",
            "CLOUDTAP_AGENT__LIMITS__USE_CGROUP": "false", "CLOUDTAP_AGENT__LIMITS__MAX_MEMORY_MIB": "16384",
            "CLOUDTAP_AGENT__PACKETS__ENABLED": "true", "CLOUDTAP_AGENT__PACKETS__DIRECTORY": str(tmp_path / "packets"),
            "CLOUDTAP_AGENT__CONTROLLER__URL": url, "CLOUDTAP_AGENT__CONTROLLER__HEARTBEAT_S": "0.5",
            "CLOUDTAP_AGENT__CONTROLLER__HOST_NAME": "hv-01",
            "CLOUDTAP_AGENT__CONTROLLER__CACHE_FILE": str(tmp_path / "controller-cache.json"),
            "CLOUDTAP_AGENT__CONTROLLER__CREDENTIAL_FILE": str(tmp_path / "credential.json"),
            "CLOUDTAP_AGENT__CONTROL__SOCKET": "",
        }  # fmt: skip
        agent = Agent(load_agent_config(None, env=agent_env))
        thread = threading.Thread(target=agent.run, name="e2e-agent", daemon=True)
        thread.start()

        def shipped() -> bool:
            r = httpx.get(f"{url}/api/v1/agents/agent-hv-01", timeout=5)
            status = r.json().get("status") if r.status_code == 200 else None
            replayed = agent.workers and all(w.finished.is_set() for w in agent.workers)
            return bool(status and status["control_url"] and replayed and status["ship_pending_batches"] == 0)

        _wait("the agent's heartbeat, replay and shipping", shipped, 45)
        assert agent.packet_store.sync()
        detail = httpx.get(f"{url}/api/v1/agents/agent-hv-01", timeout=5).json()
        assert detail["status"]["control_url"] == agent.control.url
        assert httpx.get(agent.control.url + "/packets/stats", timeout=5).status_code == 401  # the server's key only

        ip, lo, hi = "10.10.1.10", "2026-11-20T00:00:30Z", "2026-11-20T00:01:30Z"  # lb-01
        lo_ns, hi_ns = 1_795_132_830_000_000_000, 1_795_132_890_000_000_000
        out = tmp_path / "lb-01.pcapng"

        def pcap() -> subprocess.CompletedProcess[str]:
            return subprocess.run([*cli, "pcap", "--vm", "lb-01", "--from", lo, "--to", hi, "-o", str(out), "-q",
                                   "--server", url], env=env, capture_output=True, text=True)  # fmt: skip

        # the flows reach the store asynchronously after the sink shipped them
        done = _wait("a retrieval", lambda: (p := pcap()).returncode == 0 and p, 20)
        assert done.returncode == 0, done.stderr
        shark = subprocess.run(["tshark", "-r", str(out), "-T", "fields", "-e", "ip.src", "-e", "ip.dst"],
                               capture_output=True, text=True, check=True)  # fmt: skip
        pairs = [line.split("\t") for line in shark.stdout.splitlines()]
        assert pairs and all(ip in p for p in pairs)  # every packet involves lb-01's address
        ref = tcpdump_split(
            tmp_path / "cloud.pcap", f"host {ip} or (vlan and host {ip})", tmp_path / "ref.pcap"
        )
        ts, _, _ = frames_of(ref)
        expected = int(((ts >= lo_ns) & (ts < hi_ns)).sum())
        assert expected > 100 and len(pairs) == expected
        names = subprocess.run(["tshark", "-r", str(out), "-T", "fields", "-e", "frame.interface_name"],
                               capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
        assert set(names) == {"hv-01/-/cloud.pcap"}
        r = httpx.post(f"{url}/api/v1/pcap", json={"vm": "nope", "from": lo, "to": hi}, timeout=30)
        assert r.status_code == 404 and "no VM named 'nope'" in r.json()["detail"]
    finally:
        if agent is not None:
            agent.shutdown()
            if thread is not None:
                thread.join(15)
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()

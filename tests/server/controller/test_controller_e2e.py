"""Controller end to end: a real ``cloudtap server run`` process and real (in-process) agents on loopback.

Two agents in mirror mode (VXLAN on loopback) receive a synthetic cloud's frames (VM MACs on the wire) as
hosts ``hv-01`` and ``hv-02``, under the controller with a 0.5 s heartbeat. The tests run in file order on
one server (the last one kills it).
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from cloudtap.agent.config import load_agent_config
from cloudtap.agent.controller_client import machine_id
from cloudtap.agent.runner import Agent
from cloudtap.server.controller.registry import agent_id_for

CLI = [sys.executable, "-m", "cloudtap.cli.main"]
TOKEN = "t0ken"
HB = 0.5


def wait_for(what: Callable[[], Any], timeout_s: float = 10.0, step: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = what()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"condition not met within {timeout_s} s")


def inventory_doc(vms: list[dict[str, Any]], moves: dict[str, str] | None = None, extra: list[dict] | None = None) -> dict:
    moves = moves or {}
    rows = [{"name": v["name"], "project": v["project"], "host": moves.get(v["name"], v["host"]), "state": "ACTIVE",
             "interfaces": [{"mac": v["mac"], "ips": [v["ip"]]}]} for v in vms] + (extra or [])  # fmt: skip
    return {"projects": [{"name": p} for p in sorted({v["project"] for v in vms})],
            "hosts": [{"name": f"hv-0{i}", "address": f"10.0.0.1{i}"} for i in range(1, 5)], "vms": rows}  # fmt: skip


SILENT = {"name": "silent-01", "project": "shop", "host": "hv-01", "state": "ACTIVE",
          "interfaces": [{"mac": "02:00:00:00:99:99", "ips": ["10.99.0.9"]}]}  # fmt: skip


class Fleet:
    def __init__(self, tmp: Path, pcap: Path, vms: list[dict[str, Any]]) -> None:
        self.tmp, self.pcap, self.vms = tmp, pcap, vms
        self.inventory = tmp / "inventory.yaml"
        self.write_inventory()
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.agents: dict[str, Agent] = {}
        self.threads: list[threading.Thread] = []
        self.ports: list[int] = []
        self._feeding = threading.Event()

    def feed(self, pps: int = 1500) -> None:
        """Send the capture's frames, VXLAN-encapsulated, to every agent's mirror port, in a loop."""
        import dpkt

        with open(self.pcap, "rb") as fh:
            frames = [bytes(buf) for _, buf in itertools.islice(dpkt.pcap.Reader(fh), 20000)]
        header = struct.pack("!II", 0x08000000, 5001 << 8)
        self._feeding.set()

        def run() -> None:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
                i = 0
                while self._feeding.is_set():
                    started = time.monotonic()
                    for frame in frames[i : i + pps // 20]:
                        for port in list(self.ports):
                            tx.sendto(header + frame, ("127.0.0.1", port))
                    i = (i + pps // 20) % len(frames)
                    time.sleep(max(0.0, 0.05 - (time.monotonic() - started)))

        thread = threading.Thread(target=run, daemon=True)
        thread.start()

    def write_inventory(self, moves: dict[str, str] | None = None) -> None:
        tmp = self.inventory.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(inventory_doc(self.vms, moves, [SILENT])), encoding="utf-8")
        os.replace(tmp, self.inventory)

    def start_server(self) -> None:
        status = self.tmp / "url"
        status.unlink(missing_ok=True)
        env = {**os.environ, "CLOUDTAP_SERVER__API__STATUS_FILE": str(status),
               "CLOUDTAP_SERVER__CONTROLLER__TOKEN": TOKEN, "CLOUDTAP_SERVER__CONTROLLER__HEARTBEAT_S": str(HB),
               "CLOUDTAP_SERVER__CONTROLLER__SYNC_S": "0.5",
               "CLOUDTAP_SERVER__CONTROLLER__INVENTORY_FILE": str(self.inventory),
               "CLOUDTAP_SERVER__INVENTORY__ENABLED": "false",
               # loopback only: the admin API and `cloudtap fleet` need no login here (tests/server/controller/
               # test_fleet_access.py covers permissions); agents still need their own credentials
               "CLOUDTAP_SERVER__AUTH__ENABLED": "false",
               "CLOUDTAP_SERVER__AUTH__DB_PATH": str(self.tmp / "access.sqlite"),
               "CLOUDTAP_SERVER__AUTH__AUDIT_LOG": str(self.tmp / "audit.jsonl")}  # fmt: skip
        self.proc = subprocess.Popen([*CLI, "server", "run", "--data", str(self.tmp / "data"), "--port", "0"],
                                     env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
        self.url = wait_for(lambda: status.exists() and status.read_text().strip(), 60, 0.05)

    def start_agent(self, host: str, sink: str = "server") -> Agent:
        port = _free_udp_port()
        self.ports.append(port)
        env = {
            "CLOUDTAP_AGENT__AGENT_ID": f"agent-{host}",
            "CLOUDTAP_AGENT__CAPTURE__MODE": "mirror", "CLOUDTAP_AGENT__CAPTURE__MIRROR_KIND": "vxlan",
            "CLOUDTAP_AGENT__CAPTURE__MIRROR_BIND": "127.0.0.1", "CLOUDTAP_AGENT__CAPTURE__MIRROR_PORT": str(port),
            "CLOUDTAP_AGENT__OUTPUT__SINK": sink, "CLOUDTAP_AGENT__OUTPUT__SERVER_URL": self.url,
            "CLOUDTAP_AGENT__OUTPUT__SPOOL_DIRECTORY": str(self.tmp / f"spool-{host}"),
            "CLOUDTAP_AGENT__OUTPUT__DIRECTORY": str(self.tmp / f"out-{host}"),
            "CLOUDTAP_AGENT__OUTPUT__FLUSH_INTERVAL_S": "0.2",
            "CLOUDTAP_AGENT__CONTROL__PORT": "0", "CLOUDTAP_AGENT__LIMITS__USE_CGROUP": "false",
            "CLOUDTAP_AGENT__LIMITS__MAX_MEMORY_MIB": "16384",
            "CLOUDTAP_AGENT__BREAKERS__MAX_LOAD_PER_CORE": "1000", "CLOUDTAP_AGENT__BREAKERS__MIN_FREE_MEMORY_MIB": "0",
            "CLOUDTAP_AGENT__BREAKERS__MIN_FREE_DISK_MIB": "0",
            "CLOUDTAP_AGENT__CONTROLLER__URL": self.url, "CLOUDTAP_AGENT__CONTROLLER__TOKEN": TOKEN,
            "CLOUDTAP_AGENT__CONTROLLER__HEARTBEAT_S": str(HB), "CLOUDTAP_AGENT__CONTROLLER__HOST_NAME": host,
            "CLOUDTAP_AGENT__CONTROLLER__CACHE_FILE": str(self.tmp / f"cache-{host}.json"),
            "CLOUDTAP_AGENT__CONTROLLER__CREDENTIAL_FILE": str(self.tmp / f"credential-{host}.json"),
            "CLOUDTAP_AGENT__CONTROL__SOCKET": "",
        }  # fmt: skip
        (self.tmp / f"out-{host}").mkdir(exist_ok=True)
        agent = Agent(load_agent_config(None, env=env))
        agent.start()
        thread = threading.Thread(target=agent.run, daemon=True)
        thread.start()
        self.agents[host] = agent
        self.threads.append(thread)
        return agent

    def api(self, method: str, path: str, **kw: Any) -> Any:
        resp = httpx.request(method, self.url + path, timeout=30, **kw)
        assert resp.status_code == 200, resp.text
        return resp.json()

    def stop(self) -> None:
        self._feeding.clear()
        for agent in self.agents.values():
            agent.shutdown()
        for t in self.threads:
            t.join(10)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    from cloudtap.synth import builtin_scenario, write_pcap
    from cloudtap.synth.cloud import build_cloud
    from cloudtap.synth.scenario import with_overrides

    tmp = tmp_path_factory.mktemp("controller")
    scenario = with_overrides(builtin_scenario("small-cloud"), duration="1m")
    write_pcap(scenario, tmp / "cloud.pcap")
    f = Fleet(tmp, tmp / "cloud.pcap", build_cloud(scenario).inventory()["vms"])
    try:
        f.start_server()
        f.start_agent("hv-01", sink="file")  # ships nowhere: "why no data" must say so
        f.start_agent("hv-02")
        f.feed()
        yield f
    finally:
        f.stop()


def filter_of(agent: Agent) -> str:
    """The VMs the agent selects now (mirror mode: by inner MAC on decoded packets)."""
    select = agent.workers[0].pipeline.packet_filter
    return " ".join(getattr(select, "mac_texts", []))


def test_registration_good_and_bad_token(fleet: Fleet) -> None:
    body = {"hostname": "intruder", "machine_id": "x"}
    no = httpx.post(fleet.url + "/api/v1/agents/register", json=body)
    assert no.status_code == 401 and "missing token" in no.json()["detail"]
    bad = httpx.post(fleet.url + "/api/v1/agents/register", json=body, headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 403 and bad.json()["detail"] == "wrong shared token"
    wait_for(lambda: len(fleet.api("GET", "/api/v1/agents")) == 2)
    agents = {a["name"]: a for a in fleet.api("GET", "/api/v1/agents")}
    assert agents["agent-hv-01"]["id"] == agent_id_for("hv-01", machine_id())
    assert agents["agent-hv-02"]["host"] == "hv-02"
    assert fleet.agents["hv-01"].controller.agent_id == agents["agent-hv-01"]["id"]
    first = agents["agent-hv-01"]["id"]
    hb = httpx.post(fleet.url + f"/api/v1/agents/{first}/heartbeat", json={})
    assert hb.status_code == 401  # every agent call needs the agent's credential
    boot = httpx.post(fleet.url + f"/api/v1/agents/{first}/heartbeat", json={}, headers={"Authorization": f"Bearer {TOKEN}"})
    assert boot.status_code == 401  # the bootstrap token only registers
    second = fleet.agents["hv-02"].credentials
    assert second is not None and second.credential()
    as_two = {"Authorization": f"Bearer {second.credential()}"}
    for method, path in (("POST", "heartbeat"), ("GET", "config"), ("GET", "commands?wait=0")):
        r = httpx.request(method, fleet.url + f"/api/v1/agents/{first}/{path}", headers=as_two,
                          json={} if method == "POST" else None)  # fmt: skip
        assert r.status_code == 403 and "belongs to agent" in r.json()["detail"], path
    audit = (fleet.tmp / "audit.jsonl").read_text()
    assert '"action":"agent.register"' in audit and second.credential() not in audit and TOKEN not in audit


def test_heartbeat_shows_in_fleet_top(fleet: Fleet) -> None:
    def busy() -> list[dict[str, Any]]:
        rows = [r for r in fleet.api("GET", "/api/v1/fleet/top?by=bps&window=1m") if r["bps"] > 0]
        return rows if len(rows) == 2 else []

    top = wait_for(busy, 15)
    assert {r["name"] for r in top} == {"agent-hv-01", "agent-hv-02"}
    assert all(r["memory"] > 0 and not r["stale"] and r["capturing"] for r in top)
    done = subprocess.run([*CLI, "fleet", "top", "--by", "cpu", "--window", "1h", "--server", fleet.url],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "agent-hv-01" in done.stdout and "agent-hv-02" in done.stdout
    hosts = fleet.api("GET", "/api/v1/fleet/hosts")
    assert {h["host"] for h in hosts} == {"hv-01", "hv-02"} and all(h["cores"] > 0 for h in hosts)


def test_config_change_reaches_the_agent_within_one_heartbeat(fleet: Fleet) -> None:
    agent = fleet.agents["hv-01"]
    answer = fleet.api("PUT", "/api/v1/groups/default/config",
                       json={"overlay": {"limits": {"max_pps": 900000}, "capture": {"snaplen": 512}}})  # fmt: skip
    assert answer["apply"] == {"limits.max_pps": "hot", "capture.snaplen": "restart"}
    started = time.monotonic()
    wait_for(lambda: agent.limiter.max_pps == 900000, 5, 0.01)
    assert time.monotonic() - started < HB + 0.5
    assert agent.controller.restart_required == ["capture.snaplen"]
    assert agent.config.capture.snaplen == 256  # restart-required: not applied live
    bad = httpx.put(fleet.url + "/api/v1/groups/default/config", json={"overlay": {"limits": {"max_pps": -1}}})
    assert bad.status_code == 422 and "limits.max_pps" in bad.json()["detail"][0]["msg"]
    me = agent.controller.agent_id
    wait_for(lambda: fleet.api("GET", f"/api/v1/agents/{me}")["status"]["restart_required"] == ["capture.snaplen"], 5)
    fleet.api("PUT", "/api/v1/groups/default/config", json={"overlay": {}})
    wait_for(lambda: agent.limiter.max_pps == 0 and agent.controller.restart_required == [], 5)


def test_remote_stop_and_start_within_one_second(fleet: Fleet) -> None:
    agent = fleet.agents["hv-02"]
    assert agent.status().capturing
    started = time.monotonic()
    fleet.api("POST", "/api/v1/agents/agent-hv-02/capture/stop")
    wait_for(lambda: not agent.status().capturing, 5, 0.01)
    assert time.monotonic() - started < 1.0
    wait_for(lambda: fleet.api("GET", "/api/v1/diagnose/vm/lb-02")["broken"] == "capture", 5)
    started = time.monotonic()
    fleet.api("POST", "/api/v1/agents/agent-hv-02/capture/start")
    wait_for(lambda: agent.status().capturing, 5, 0.01)
    assert time.monotonic() - started < 1.0


def test_policy_follows_a_vm_that_moves(fleet: Fleet) -> None:
    a, b = fleet.agents["hv-01"], fleet.agents["hv-02"]
    lb01 = "fa:16:3e:00:00:00"
    fleet.api("PUT", "/api/v1/policies/shop", json={"select": {"project": "shop"}, "bpf": "ip"})
    wait_for(lambda: lb01 in filter_of(a) and "fa:16:3e:00:00:01" in filter_of(b), 5, 0.01)  # lb-02 on hv-02
    assert lb01 not in filter_of(b)
    fleet.write_inventory({"lb-01": "hv-02"})  # lb-01 migrates to hv-02
    fleet.api("POST", "/api/v1/controller/sync")
    compiled = fleet.api("GET", "/api/v1/controller/compiled")
    by_name = {c["name"]: c for c in compiled.values()}
    assert "lb-01" in by_name["agent-hv-02"]["vms"] and "lb-01" not in by_name["agent-hv-01"]["vms"]
    started = time.monotonic()
    wait_for(lambda: lb01 in filter_of(b) and lb01 not in filter_of(a), 5, 0.01)
    assert time.monotonic() - started < HB + 1.0
    assert b.config.policy.active and "shop" in b.config.policy.policies
    base = b.status().captured_packets
    wait_for(lambda: b.status().captured_packets > base, 5)  # still capturing, now filtered by policy


def test_why_is_there_no_data(fleet: Fleet) -> None:
    def why(vm: str) -> dict[str, Any]:
        return fleet.api("GET", f"/api/v1/diagnose/vm/{vm}")  # type: ignore[no-any-return]

    assert why("ghost-99")["broken"] == "inventory"
    d = why("web-01")  # on hv-03: no agent there
    assert d["broken"] == "agent" and "hv-03" in d["summary"]
    d = why("silent-01")  # hv-01's agent is alive and capturing, but writes records to local files
    assert d["broken"] == "ingest" and "no record from agent agent-hv-01" in d["summary"]
    assert [s["step"] for s in d["steps"] if s["status"] == "ok"][:6] == ["inventory", "host", "agent", "alive",
                                                                        "capture", "policy"]  # fmt: skip
    fleet.api("PUT", "/api/v1/policies/no-db", json={"priority": 1, "select": {"vm": "db-*"}, "action": {"capture": False}})
    d = why("db-01")
    assert d["broken"] == "policy" and "no-db" in d["summary"]
    cli = subprocess.run([*CLI, "fleet", "why", "--vm", "db-01", "--server", fleet.url],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert cli.returncode == 3 and "BROKEN" in cli.stdout and "no-db" in cli.stdout
    fleet.api("DELETE", "/api/v1/policies/no-db")
    fleet.agents["hv-01"].controller.stop()  # hv-01 stops reporting
    d = wait_for(lambda: (r := why("app-02"))["broken"] == "alive" and r, 10, 0.2)
    assert "no heartbeat" in d["summary"]
    stale = fleet.api("GET", "/api/v1/fleet/stale")
    assert [r["name"] for r in stale] == ["agent-hv-01"]


def test_agent_keeps_capturing_when_the_server_dies(fleet: Fleet) -> None:
    agent = fleet.agents["hv-02"]
    policy = agent.config.policy
    assert fleet.proc is not None
    fleet.proc.send_signal(signal.SIGKILL)
    fleet.proc.wait(10)
    wait_for(lambda: not agent.controller.connected, 5)
    base = agent.status().captured_packets
    wait_for(lambda: agent.status().captured_packets > base + 100, 5)
    assert agent.status().capturing and agent.config.policy == policy  # last config kept
    assert agent.sink.stats().dead_letters == 0  # nothing rejected: what is encoded waits in the spool
    # a restart while the server is away starts from the cached controller config
    base = agent.base_config
    again = Agent(base.model_copy(update={"output": base.output.model_copy(update={"sink": "file"})}))
    assert again.config.policy == policy and again.config.policy.active



def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


"""Controller pieces in process: tokens, overlays, policy compilation (VM move), commands, persistence, diagnosis."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from cloudtap.agent.config_overlay import apply_mode, validate_overlay
from cloudtap.errors import ConfigError
from cloudtap.inventory.model import VM, Host, Interface, Project, Snapshot, Subnet
from cloudtap.server.controller.auth import Refusal, check_token
from cloudtap.server.controller.commands import CommandQueue
from cloudtap.server.controller.compiler import compile_policies
from cloudtap.server.controller.policy import Policy
from cloudtap.server.controller.service import Controller
from cloudtap.server.controller.status import HeartbeatReport
from cloudtap.server.settings import ControllerSection


def cloud(web_host: str = "hv-a") -> Snapshot:
    """Two hosts, a project with a web VM (moves between hosts), a db VM and a stopped VM."""
    return Snapshot(
        source="test", taken_at=1,
        projects=[Project("p-shop", "shop"), Project("p-ops", "ops")],
        hosts=[Host("hv-a", "hv-a", address="10.0.0.1"), Host("hv-b", "hv-b", address="10.0.0.2"),
               Host("hv-c", "hv-c", address="10.0.0.3")],
        subnets=[Subnet("s1", "shop-net", "10.10.1.0/24")],
        vms=[VM("v-web", "web-01", "p-shop", web_host, "ACTIVE", ("frontend",)),
             VM("v-db", "db-01", "p-shop", "hv-b", "ACTIVE"),
             VM("v-off", "old-01", "p-ops", "hv-a", "SHUTOFF"),
             VM("v-c", "cache-01", "p-ops", "hv-c", "ACTIVE")],
        interfaces=[Interface("i-web", "fa:16:3e:00:00:01", ("10.10.1.5",), "v-web", subnet="s1", device="tapweb"),
                    Interface("i-db", "fa:16:3e:00:00:02", ("10.10.1.6",), "v-db", subnet="s1"),
                    Interface("i-c", "fa:16:3e:00:00:03", ("10.20.0.7",), "v-c")],
    )  # fmt: skip


def make(tmp_path: Path, inv: list[Snapshot], **cfg: object) -> Controller:
    return Controller(ControllerSection(**cfg), tmp_path / "ctl.sqlite", inventory=lambda: inv[0])  # type: ignore[arg-type]


def reg(ctl: Controller, host: str, token: str | None = None) -> str:
    return str(ctl.register(token, {"name": f"agent-{host}", "hostname": host, "machine_id": f"m-{host}"})["agent_id"])


def test_tokens_shared_per_agent_and_reasons() -> None:
    cfg = ControllerSection(token="shared", agent_tokens={"hv-b": "own-b"})
    check_token(cfg, ("agent-a", "hv-a"), "shared")
    check_token(cfg, ("agent-b", "hv-b"), "own-b")
    with pytest.raises(Refusal, match="missing token") as e:
        check_token(cfg, ("agent-a", "hv-a"), None)
    assert e.value.status == 401
    with pytest.raises(Refusal, match="wrong shared token") as e:
        check_token(cfg, ("agent-a", "hv-a"), "nope")
    assert e.value.status == 403
    with pytest.raises(Refusal, match="per-agent token"):
        check_token(cfg, ("agent-b", "hv-b"), "shared")  # the per-agent token wins
    with pytest.raises(Refusal, match="no per-agent token configured"):
        check_token(ControllerSection(agent_tokens={"x": "y"}), ("agent-a", "hv-a"), "y")
    check_token(ControllerSection(), ("anyone", "h"), None)  # open registration


def test_overlay_modes_and_errors() -> None:
    assert apply_mode("limits.max_pps") == "hot"
    assert apply_mode("capture.snaplen") == "restart"
    assert apply_mode("policy.bpf") == "hot"
    assert validate_overlay({"limits": {"max_pps": 5}, "capture": {"mode": "mirror"}}) == {
        "limits.max_pps": "hot", "capture.mode": "restart"}  # fmt: skip
    with pytest.raises(ConfigError, match="limits.max_ppz"):
        validate_overlay({"limits": {"max_ppz": 5}})
    with pytest.raises(ConfigError, match="capture.snaplen"):
        validate_overlay({"capture": {"snaplen": 5}})
    with pytest.raises(ConfigError, match="manages"):
        validate_overlay({"policy": {"active": True}})


def test_agent_id_is_stable_and_state_survives_a_restart(tmp_path: Path) -> None:
    inv = [cloud()]
    ctl = make(tmp_path, inv, token="boot")
    a = reg(ctl, "hv-a", "boot")
    assert reg(ctl, "hv-a", "boot") == a and reg(ctl, "hv-b", "boot") != a
    answer = ctl.register("boot", {"name": "agent-hv-a", "hostname": "hv-a", "machine_id": "m-hv-a"})
    ctl.set_group_config("edge", {"limits": {"max_pps": 1000}})
    ctl.set_group(a, "edge")
    ctl.put_policy(Policy(name="shop", select={"project": "shop"}))
    version = ctl.registry.get(a).config_version
    ctl.close()
    again = make(tmp_path, inv, token="boot")
    rec = again.registry.get(a)
    assert again.authenticate_agent(answer["credential"]).id == a  # the credential survives a server restart
    assert again.control_key(a) == answer["control_key"]
    assert rec.group == "edge" and rec.config_version == version  # no spurious bump after a restart
    assert again.groups.get("edge").overlay == {"limits": {"max_pps": 1000}}
    assert [p.name for p in again.policies.all()] == ["shop"]
    assert again.config_for(rec)["overlay"] == {"limits": {"max_pps": 1000}}
    again.close()


def test_policy_follows_a_vm_that_moves_within_one_sync(tmp_path: Path) -> None:
    inv = [cloud("hv-a")]
    ctl = make(tmp_path, inv)
    a, b = reg(ctl, "hv-a"), reg(ctl, "hv-b")
    ctl.put_policy(Policy(name="web", select={"vm": "web-*"}, bpf="tcp port 80", action={"snaplen": 512}))
    before = {k: ctl.registry.get(k).config_version for k in (a, b)}
    comp = ctl.compiled()
    assert comp[a]["vms"] == ["web-01"] and comp[a]["interfaces"] == ["tapweb"]
    assert comp[a]["bpf"] == "((ether host fa:16:3e:00:00:01) and (tcp port 80))" and comp[a]["snaplen"] == 512
    assert comp[b]["vms"] == [] and comp[b]["capture"] is False
    inv[0] = cloud("hv-b")  # the VM migrates
    summary = ctl.sync()
    comp = ctl.compiled()
    assert comp[b]["vms"] == ["web-01"] and "fa:16:3e:00:00:01" in comp[b]["macs"]
    assert comp[a]["vms"] == [] and comp[a]["capture"] is False
    assert set(summary["changed"]) == {"agent-hv-a", "agent-hv-b"}
    after = {k: ctl.registry.get(k).config_version for k in (a, b)}
    assert all(after[k] == before[k] + 1 for k in (a, b))
    assert ctl.config_for(ctl.registry.get(b))["policy"]["bpf"].startswith("((ether host fa:16:3e:00:00:01)")
    ctl.close()


def test_selectors_priority_and_mac_from_agent_report() -> None:
    snap = cloud()
    agents_ctl = []
    from cloudtap.server.controller.registry import AgentRecord

    agents_ctl = [AgentRecord("A", "a", "hv-a", "m"), AgentRecord("B", "b", "hv-b.example.org", "m"),
                  AgentRecord("C", "c", "other", "m", address="10.0.0.3")]  # fmt: skip
    policies = [Policy(name="shop", select={"project": "shop", "subnet": "10.10.1.0/24"}),
                Policy(name="no-db", priority=10, select={"vm": "db-*"}, action={"capture": False}),
                Policy(name="ops", select={"project": "ops", "tag": None, "host": "hv-c"})]  # fmt: skip
    comp = compile_policies(snap, policies, agents_ctl, seen={"C": {"fa:16:3e:00:00:03": "vnet7"}})
    assert comp.vm_policy == {"v-web": "shop", "v-db": "no-db", "v-c": "ops"}
    assert comp.agents["A"].vms == ["web-01"]
    assert comp.agents["B"].vms == [] and not comp.agents["B"].capture  # db-01 excluded; short host name matched
    assert comp.agents["C"].interfaces == ["vnet7"]  # by address, interface from the MAC the agent reports
    assert comp.agents["C"].policies == ["ops"]
    by_tag = compile_policies(snap, [Policy(name="t", select={"tag": "front*"})], agents_ctl)
    assert by_tag.agents["A"].vms == ["web-01"]
    assert all(not c.active for c in compile_policies(snap, [], agents_ctl).agents.values())
    with pytest.raises(ValueError, match="syntax"):
        Policy(name="bad", bpf="tcp port")


def test_long_poll_answers_as_soon_as_a_command_is_queued() -> None:
    queue = CommandQueue()

    async def scenario() -> tuple[list[str], float]:
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        loop.call_later(0.2, lambda: queue.put("a1", "stop"))
        cmds = await queue.wait("a1", 10.0)
        return [c.action for c in cmds], time.monotonic() - started

    actions, waited = asyncio.run(scenario())
    assert actions == ["stop"] and 0.15 < waited < 1.0
    assert asyncio.run(queue.wait("a1", 0.05)) == []
    with pytest.raises(ValueError, match="unknown command"):
        queue.put("a1", "reboot")


def test_fleet_top_rates_and_stale(tmp_path: Path) -> None:
    ctl = make(tmp_path, [cloud()], heartbeat_s=0.1)
    a = ctl.registry.get(reg(ctl, "hv-a"))
    b = ctl.registry.get(reg(ctl, "hv-b"))
    ctl.registry.update(a.id, heartbeat_s=0.1)
    now = time.time()
    for i in range(3):
        ctl.heartbeats.record(a.id, now - 2 + i, HeartbeatReport(cpu_percent=50, captured_bytes=1000 * i, capturing=True))
        ctl.heartbeats.record(b.id, now - 2 + i, HeartbeatReport(cpu_percent=10, captured_bytes=5000 * i, kernel_drops=i))
    ctl.registry.seen(b.id, now + 60)  # b keeps reporting; a does not
    top = ctl.fleet.top("bps", "1m")
    assert [r["name"] for r in top] == ["agent-hv-b", "agent-hv-a"]
    assert top[0]["bps"] == pytest.approx(8 * 5000, rel=0.01) and top[0]["drops"] == 2
    assert ctl.fleet.top("cpu", "1h")[0]["name"] == "agent-hv-a"
    time.sleep(0.35)
    assert [r["name"] for r in ctl.fleet.stale()] == ["agent-hv-a"]
    with pytest.raises(ValueError):
        ctl.fleet.top("colour")
    ctl.close()


def test_diagnose_names_the_first_broken_link(tmp_path: Path) -> None:
    inv = [cloud()]
    ctl = make(tmp_path, inv)
    a = reg(ctl, "hv-a")
    assert ctl.diagnose_vm("ghost")["broken"] == "inventory"
    assert ctl.diagnose_vm("old-01")["broken"] == "vm_state"
    assert ctl.diagnose_vm("db-01")["broken"] == "agent"  # hv-b has no agent
    ctl.heartbeats.record(a, time.time(), HeartbeatReport(capturing=False, paused_by=["stopped by user"]))
    d = ctl.diagnose_vm("web-01")
    assert d["broken"] == "capture" and "stopped by user" in d["summary"]
    ctl.heartbeats.record(a, time.time(), HeartbeatReport(capturing=True, mode="interfaces"))
    ctl.registry.update(a, mode="interfaces")
    assert ctl.diagnose_vm("web-01")["broken"] == "interface"
    ctl.put_policy(Policy(name="only-db", select={"vm": "db-*"}))
    d = ctl.diagnose_vm("web-01")
    assert d["broken"] == "policy" and "no enabled policy selects it" in d["summary"]
    ctl.close()


def test_diagnose_ingest_links_with_a_records_lookup(tmp_path: Path) -> None:
    from cloudtap.server.controller.diagnose import diagnose_vm

    ctl = make(tmp_path, [cloud()])
    a = reg(ctl, "hv-a")
    ctl.heartbeats.record(a, time.time(), HeartbeatReport(capturing=True, ship_pending_batches=7))
    snap = cloud()
    calls: list[tuple[str, list[str], list[str]]] = []

    def lookup(last_any: float | None, last_vm: float | None):  # type: ignore[no-untyped-def]
        def records(agent: str, macs: list[str], ips: list[str]) -> dict[str, object]:
            calls.append((agent, macs, ips))
            return {"last_any": last_any, "last_vm": last_vm}

        return records

    now = time.time()
    d = diagnose_vm("web-01", snap, ctl.fleet, ctl.compilation, lookup(now - 3600, None)).as_dict()
    assert d["broken"] == "ingest" and "stopped" in d["summary"] and "7 batches" in d["summary"]
    d = diagnose_vm("web-01", snap, ctl.fleet, ctl.compilation, lookup(now - 5, None)).as_dict()
    assert d["broken"] == "vm_traffic" and "10.10.1.5" in d["summary"]
    d = diagnose_vm("web-01", snap, ctl.fleet, ctl.compilation, lookup(now - 5, now - 6)).as_dict()
    assert d["ok"] and d["broken"] is None
    assert calls[0] == ("agent-hv-a", ["fa:16:3e:00:00:01"], ["10.10.1.5"])
    ctl.close()


def test_a_vlan_filter_of_one_policy_does_not_shift_another_policys_filter() -> None:
    """libpcap reads every term after ``vlan`` at shifted offsets: ORed on one agent, the policy using it goes last."""
    import struct

    import numpy as np

    from cloudtap.capture.bpf import FrameFilter
    from cloudtap.capture.frames import FrameBatch
    from cloudtap.server.controller.registry import AgentRecord

    def frame(src_mac: str, vlan: int | None, proto: int, dport: int) -> bytes:
        eth = bytes(6) + bytes.fromhex(src_mac.replace(":", ""))
        tag = struct.pack("!HH", 0x8100, vlan) if vlan is not None else b""
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 1, 0, 64, proto, 0, bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
        l4 = struct.pack("!HHIIHHHH", 40000, dport, 0, 0, 0x5010, 0, 0, 0) if proto == 6 else struct.pack(
            "!HHHH", 40000, dport, 8, 0) + bytes(12)
        return eth + tag + struct.pack("!H", 0x0800) + ip + l4

    snap = cloud()
    snap.vms.append(VM("v-web2", "web-02", "p-shop", "hv-a", "ACTIVE"))
    snap.interfaces.append(Interface("i-web2", "fa:16:3e:00:00:09", ("10.10.1.9",), "v-web2", subnet="s1"))
    agents = [AgentRecord("A", "a", "hv-a", "m")]
    web_mac = "fa:16:3e:00:00:01"
    policies = [Policy(name="a-tagged", select={"vm": "web-01"}, bpf="vlan 100 and tcp port 80"),
                Policy(name="b-dns", select={"vm": "web-02"}, bpf="udp port 53")]  # fmt: skip
    bpf = compile_policies(snap, policies, agents).agents["A"].bpf
    assert bpf is not None
    frames = [frame(web_mac, 100, 6, 80), frame("fa:16:3e:00:00:09", None, 17, 53), frame(web_mac, None, 6, 80)]
    data = np.frombuffer(b"".join(frames), np.uint8).copy()
    lens = np.array([len(f) for f in frames], np.uint32)
    batch = FrameBatch(data=data, offset=np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64), cap_len=lens,
                       wire_len=lens, ts_ns=np.zeros(3, np.int64), linktype=np.ones(3, np.uint16),
                       interface=np.zeros(3, np.uint16))  # fmt: skip
    assert FrameFilter(bpf).mask(batch).tolist() == [True, True, False]

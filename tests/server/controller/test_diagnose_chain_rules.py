"""The agent's and the server's links of "why no data?" in process (no store): kernel drops apart from the
pps cap, refusals and backpressure only broken while they explain missing records, retention by TTL."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from cloudtap.inventory.model import VM, Host, Interface, Project, Snapshot
from cloudtap.server.controller.diagnose import diagnose_vm
from cloudtap.server.controller.diagnose_storage import ServerSide
from cloudtap.server.controller.service import Controller
from cloudtap.server.controller.status import HeartbeatReport
from cloudtap.server.ingest import AgentRefusals
from cloudtap.server.settings import ControllerSection

SNAP = Snapshot(
    source="test", taken_at=1, projects=[Project("p-shop", "shop")], hosts=[Host("hv-a", "hv-a")],
    vms=[VM("v-web", "web-01", "p-shop", "hv-a", "ACTIVE")],
    interfaces=[Interface("i-web", "fa:16:3e:00:00:01", ("10.10.1.5",), "v-web")],
)  # fmt: skip


def controller(tmp_path: Path) -> tuple[Controller, str]:
    cfg = ControllerSection.model_validate({})
    ctl = Controller(cfg, tmp_path / "ctl.sqlite", inventory=lambda: SNAP)
    agent = str(ctl.register(None, {"name": "agent-hv-a", "hostname": "hv-a", "machine_id": "m"})["agent_id"])
    return ctl, agent


def beat(ctl: Controller, agent: str, ago: float, **figures: Any) -> None:
    ctl.heartbeats.record(agent, time.time() - ago, HeartbeatReport(capturing=True, **figures))
    ctl.registry.seen(agent, time.time())


def records(last_any: float | None, last_logged: float | None = None) -> Any:
    def lookup(agent: str, macs: list[str], ips: list[str]) -> dict[str, Any]:
        found: dict[str, Any] = {"last_any": last_any, "last_vm": last_any, "error": ""}
        if last_logged is not None:
            found["last_logged"] = last_logged
        return found

    return lookup


def why(ctl: Controller, lookup: Any = None, server: ServerSide | None = None) -> dict[str, Any]:
    return diagnose_vm("web-01", SNAP, ctl.fleet, ctl.compilation, lookup, server=server).as_dict()


def test_kernel_drops_and_pps_cap_drops_are_told_apart(tmp_path: Path) -> None:
    ctl, agent = controller(tmp_path)
    beat(ctl, agent, 30, kernel_drops=0, pps_limit_drops=0, meter_drops=0)
    beat(ctl, agent, 1, kernel_drops=7000, meter_drops=3)  # the kernel lost everything, no cap involved
    d = why(ctl)
    assert d["broken"] == "drops" and "kernel 7000, flow table full 3" in d["summary"] and "max_cpu_cores" in d["fix"]
    ctl.close()
    ctl, agent = controller(tmp_path / "b")
    beat(ctl, agent, 30)
    beat(ctl, agent, 1, kernel_drops=10, pps_limit_drops=9000)  # the cap took what the kernel let through
    d = why(ctl)
    assert d["broken"] == "limits" and "dropped all 9000 packets" in d["summary"]
    assert {s["step"]: s["status"] for s in d["steps"]}["drops"] == "warn"
    ctl.close()
    ctl, agent = controller(tmp_path / "c")
    beat(ctl, agent, 30)
    beat(ctl, agent, 1, captured_packets=5000, pps_limit_drops=100)  # capped, not starved: a warning
    d = why(ctl, records(time.time() - 5))
    assert d["ok"] and {s["step"]: s["status"] for s in d["steps"]}["limits"] == "warn"
    assert "records are incomplete" in next(s for s in d["steps"] if s["step"] == "limits")["detail"]
    ctl.close()


def test_refusals_and_backpressure_only_break_while_records_are_missing(tmp_path: Path) -> None:
    ctl, agent = controller(tmp_path)
    beat(ctl, agent, 1)
    now = time.time()
    refused = AgentRefusals(3, {"bad columns": 3}, now - 100, "column x: expected Int64")
    depth = type("Depth", (), {"failed_groups": 1, "batches": 4, "groups": 0})()
    server = ServerSide(refusals=lambda a: refused if a == "agent-hv-a" else None, backlog=lambda: depth,
                        last_error=lambda: "coalesced insert failed: OSError: disk full")  # fmt: skip
    d = why(ctl, records(now - 10), server)  # older refusals, fresh records: warnings only
    steps = {s["step"]: s for s in d["steps"]}
    assert d["ok"] and steps["rejected"]["status"] == "warn" and steps["backpressure"]["status"] == "warn"
    assert steps["rejected"]["fix"] and "bad columns 3" in steps["rejected"]["detail"]
    d = why(ctl, records(now - 1000), server)
    assert d["broken"] == "rejected" and "expected Int64" in d["summary"]
    server.refusals = None
    d = why(ctl, records(None), server)
    assert d["broken"] == "backpressure" and "disk full" in d["summary"] and "4 batches" in d["summary"]
    ctl.close()


def test_records_expired_by_ttl_and_older_drops(tmp_path: Path) -> None:
    ctl, agent = controller(tmp_path)
    beat(ctl, agent, 1)
    now = time.time()
    server = ServerSide(ttl_s={"flow_log": 3600, "edge_1s": 3600}, drops=lambda since, tables: [])
    d = why(ctl, records(None, last_logged=now - 7200), server)
    assert d["broken"] == "retention" and "expired (TTL" in d["summary"] and "ttl_days" in d["fix"]
    d = why(ctl, records(None, last_logged=now - 60), server)
    assert d["broken"] == "retention" and "not by this server's disk budget" in d["summary"]
    d = why(ctl, records(None, last_logged=None), server)  # never logged: the agent never shipped
    assert d["broken"] == "ingest"
    ctl.close()

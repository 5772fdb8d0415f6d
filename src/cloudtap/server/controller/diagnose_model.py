"""The answer of "why is there no data for VM X?": the chain's steps, its first broken link, what to do."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

#: What to do when a step is broken, by step (the chain's order; ``docs/controller.md``).
FIXES: dict[str, str] = {
    "inventory": "Check the name, and the inventory connectors: the VM may not be synced yet.",
    "vm_state": "Start the VM: a stopped VM sends nothing.",
    "host": "The inventory does not say where the VM runs: check the cloud connector.",
    "agent": "Install and register cloudtap agent on that hypervisor; its host name or address must match the inventory.",
    "alive": "The agent stopped sending heartbeats: check its service on the host and the network to this server.",
    "capture": "Start capture on the agent (cloudtap fleet capture start), or look at what paused it "
    "(a breaker trips on CPU or memory pressure).",
    "policy": "Add or change a policy so that one selects this VM.",
    "interface": "The agent does not see the VM's NICs: check the inventory's MACs and the agent's interface discovery.",
    "drops": "The kernel drops what the agent cannot read in time: give it more CPU (limits.max_cpu_cores), "
    "a larger ring (capture.ring_mib), or a narrower policy; a full flow table needs meter.max_flows raised.",
    "limits": "The agent's own limits drop the traffic: raise limits.max_pps (0: no cap) or limits.max_cpu_cores "
    "in the group config, or narrow the policy to the VMs you need.",
    "rejected": "The server refuses this agent's batches (see the reason): run matching agent and server versions, "
    "fix the agent's output settings; refused batches wait in the agent's spool dead-letter folder "
    "(resend them with cloudtap import once fixed).",
    "backpressure": "The server cannot write to its store: check the store (ClickHouse up, disk space, read-only "
    "tables) and the server log; agents keep their batches in their spools and resend them.",
    "retention": "Rows were stored and then removed: raise storage.max_disk_gib (or add disk) for the disk budget, "
    "or storage.ttl_days / storage.retention_days for expiry.",
    "ingest": "Check the agent's output (sink 'server', URL, credential) and its spool; its ship errors are in "
    "its status.",
    "vm_traffic": "The pipeline works but the VM itself sent nothing in the period: is it idle?",
    "tagging": "The VM's flows are stored without its id, so views by VM or project miss them: make the inventory "
    "list the VM's current IPs and MACs (the inventory connectors) and look at tagging errors in the server log.",
}

Add = Callable[..., bool]


@dataclass
class Step:
    """One link of the chain; ``fix`` says what to do when it is broken."""

    step: str
    status: str  #: ok / broken / warn / skipped
    detail: str
    fix: str = ""


@dataclass
class Diagnosis:
    """The walk for one VM; ``broken`` is the first broken link (None: data should be there)."""

    vm: str
    steps: list[Step] = field(default_factory=list)

    @property
    def broken(self) -> Step | None:
        return next((s for s in self.steps if s.status == "broken"), None)

    def add(self, step: str, status: str, detail: str, fix: str | None = None) -> bool:
        """Append a step (a broken one gets ``FIXES[step]`` unless ``fix`` is given); False when broken."""
        if fix is None:
            fix = FIXES.get(step, "") if status in ("broken", "warn") else ""
        self.steps.append(Step(step, status, detail, fix))
        return status != "broken"

    def as_dict(self) -> dict[str, Any]:
        b = self.broken
        return {"vm": self.vm, "ok": b is None, "broken": b.step if b else None,
                "summary": b.detail if b else "every link works: data for this VM should be arriving",
                "fix": b.fix if b else "", "steps": [asdict(s) for s in self.steps]}  # fmt: skip

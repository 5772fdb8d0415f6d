"""Applying a controller document to a running agent: hot keys pushed into its parts, restart keys held back.

Used by :class:`~cloudtap.agent.controller_client.ControllerClient`. The policy's VM selection becomes the
frame filter (interfaces, replay) or a decoded-packet MAC filter (mirror mode, :class:`MacSelect`).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from cloudtap.agent.config import AgentConfig

if TYPE_CHECKING:
    from cloudtap.agent.runner import Agent
    from cloudtap.capture.policy_filter import PolicyFilter

POLICY_PAUSE = "policy: no VM on this host is selected by a policy"


def revert(new: AgentConfig, old: AgentConfig, keys: list[str]) -> AgentConfig:
    """``new`` with the ``keys`` (dotted) set back to their values in ``old``."""
    if not keys:
        return new
    data = new.model_dump(mode="json")
    before = old.model_dump(mode="json")
    for key in keys:
        parts = key.split(".")
        src: Any = before
        dst: Any = data
        for part in parts[:-1]:
            src, dst = src.get(part, {}), dst.setdefault(part, {})
        if parts[-1] in src:
            dst[parts[-1]] = src[parts[-1]]
        else:
            dst.pop(parts[-1], None)
    return AgentConfig.model_validate(data)


def apply_hot(agent: Agent, cfg: AgentConfig, keys: list[str]) -> None:
    """Push hot-key values into the running agent's parts."""
    sections = {k.split(".")[0] for k in keys}
    if {"capture.bpf"} & set(keys) or "policy" in sections:
        _apply_filter(agent, cfg)
    if "capture.interfaces" in keys and cfg.capture.mode == "interfaces":
        _apply_interfaces(agent, agent.config.capture.interfaces, cfg.capture.interfaces)
    if "policy" in sections and cfg.capture.mode == "interfaces" and cfg.policy.active:
        _apply_interfaces(agent, [], cfg.policy.interfaces)
    if "limits.max_pps" in keys:
        from cloudtap.agent.guard import PpsLimiter

        agent.limiter = PpsLimiter(cfg.limits.max_pps)
        for w in agent.workers:
            w._limiter = agent.limiter
    if "limits.max_cpu_cores" in keys:
        gov = agent.governor
        gov.max_cpu_cores = float(cfg.limits.max_cpu_cores)
        gov.unlimited = gov.max_cpu_cores >= (os.cpu_count() or 1)
    if "breakers" in sections:
        from cloudtap.agent.guard import HostBreakers

        agent.breakers = HostBreakers(cfg.breakers, agent.breakers.disk_path)
    if "output.flush_interval_s" in keys and hasattr(agent.sink, "flush_interval_s"):
        agent.sink.flush_interval_s = cfg.output.flush_interval_s
    store = getattr(agent, "packet_store", None)
    if store is not None and hasattr(store, "configure"):
        live = {k.split(".", 1)[1]: getattr(cfg.packets, k.split(".", 1)[1]) for k in keys
                if k.startswith("packets.") and k.count(".") == 1}  # fmt: skip
        if "policy.store_packets" in keys or ("policy.active" in keys and cfg.policy.active):
            live["enabled"] = cfg.policy.store_packets if cfg.policy.active else cfg.packets.enabled
        if live:
            store.configure(**live)
    if "broker" in sections and getattr(agent, "broker", None) is not None:
        agent.broker.apply(cfg.broker)  # sockets and rules swapped before the next batch
    if "policy" in sections:
        agent.set_policy_pause(POLICY_PAUSE if cfg.policy.active and not cfg.policy.capture else None)


def policy_filter_of(cfg: AgentConfig) -> PolicyFilter | None:
    """The policies' combined per-policy filter (``policy.filters``: snap length per policy), or None when the
    controller sent none, no policy is active, or the capture is mirrored (outer packets: see ``MacSelect``)."""
    from cloudtap.capture.policy_filter import PolicyFilter

    pol = cfg.policy
    if not (pol.active and pol.filters) or cfg.capture.mode == "mirror":
        return None
    return PolicyFilter.from_entries(pol.filters, cfg.capture.bpf, cfg.capture.snaplen)


def _apply_filter(agent: Agent, cfg: AgentConfig) -> None:
    """Apply capture.bpf and the policy's selection.

    Ethernet frames (interfaces, replay): one frame filter = capture.bpf AND the policy's BPF (VM MACs and
    the policies' own filters). Mirror mode hands tunnelled outer packets to the frame filter, where libpcap
    cannot see the inner MACs: the VM selection runs on the decoded packets' inner MACs instead
    (:class:`MacSelect`), and the policies' own BPF is not applied there.
    """
    from cloudtap.capture.bpf import FrameFilter

    pol = cfg.policy
    tunnelled = cfg.capture.mode == "mirror"
    per_policy = policy_filter_of(cfg)  # compiled here: a syntax error raises before anything changes
    parts = [p for p in (cfg.capture.bpf, pol.bpf if pol.active and not tunnelled else None) if p]
    expr = " and ".join(f"({p})" for p in parts) if parts else None
    new: FrameFilter | PolicyFilter | None = per_policy or (FrameFilter(expr) if expr else None)
    if isinstance(new, FrameFilter):
        for linktype in (1, 228) if tunnelled else (1,):
            new.program(linktype)  # compile now: a worker thread must never meet a filter error
    for worker in agent.workers:
        if cfg.capture.mode == "interfaces":  # the kernel cuts each packet to its policy's snap length
            worker.with_source(lambda s: s.set_policy_filter(per_policy) if hasattr(s, "set_policy_filter") else None)
        worker.pipeline.filter = new
        worker.request_select = per_policy.wants_requests if per_policy and per_policy.any_requests else None
        if not hasattr(worker, "_controller_inner_filter"):
            worker._controller_inner_filter = worker.pipeline.packet_filter  # type: ignore[attr-defined]
        inner = worker._controller_inner_filter  # type: ignore[attr-defined]
        worker.pipeline.packet_filter = MacSelect(pol.macs, inner) if pol.active and tunnelled else inner


class MacSelect:
    """Decoded-packet filter keeping packets whose inner source or destination MAC is selected (vectorised)."""

    def __init__(self, macs: list[str], inner: Any = None) -> None:
        import numpy as np

        self.mac_texts = sorted({m.lower() for m in macs})
        self.macs = np.array([int(m.replace(":", ""), 16) for m in self.mac_texts], dtype=np.uint64)
        self.inner = inner
        self._np = np

    def __call__(self, frames: Any, packets: Any) -> Any:
        np = self._np
        keep = np.isin(packets["src_mac"], self.macs) | np.isin(packets["dst_mac"], self.macs)
        if self.inner is not None:
            keep &= self.inner(frames, packets)
        return keep


def _apply_interfaces(agent: Agent, old: list[str], new: list[str]) -> None:
    for name in sorted(set(new) - set(old)):
        for worker in agent.workers:
            worker.with_source(lambda s, n=name: s.add_interface(n) if n not in s.interfaces else None)  # type: ignore[attr-defined]
    for name in sorted(set(old) - set(new)):
        for worker in agent.workers:
            worker.with_source(lambda s, n=name: s.remove_interface(n) if n in s.interfaces else None)  # type: ignore[attr-defined]


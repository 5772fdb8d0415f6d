"""Where the capture workers' packets come from, and the VM interfaces followed onto them.

:meth:`PacketSources.open` is the agent's default source factory: a replayed file, the mirror listener,
or (``interfaces`` mode) AF_PACKET rings sized by the memory budget on the configured interfaces plus
the VM interfaces the watcher already knows. In ``interfaces`` mode the ``watcher`` thread
(:meth:`PacketSources.follow`) then adds and removes VM interfaces on every worker's open source as
they come and go, registering each as an observation point with its VM identity.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cloudtap.capture.source import PacketSource
from cloudtap.errors import CaptureError

if TYPE_CHECKING:
    from cloudtap.agent.runner import Agent

log = logging.getLogger(__name__)


class PacketSources:
    """Opens each worker's packet source for the agent's capture mode and follows VM interfaces onto them.

    Reads the agent's current ``config``, ``budget``, ``policy_filter``, ``points`` and ``workers`` when it
    opens a source or sees an interface event.
    """

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.watcher: Any = None  #: the InterfaceWatcher, once :meth:`follow` started it
        self._thread: threading.Thread | None = None

    def open(self, worker: int) -> PacketSource:
        """A new packet source for capture worker ``worker``."""
        agent = self.agent
        cap = agent.config.capture
        if cap.mode == "replay":
            from cloudtap.capture.replay import ReplaySource

            if cap.replay_file is None:
                raise CaptureError("replay mode needs capture.replay_file")
            return ReplaySource(cap.replay_file, speed=cap.replay_speed)
        if cap.mode == "mirror":
            from cloudtap.capture.mirror import MirrorSource
            from cloudtap.capture.mirror_config import MirrorConfig

            return MirrorSource(
                MirrorConfig(kind=cap.mirror_kind, bind=cap.mirror_bind, port=cap.mirror_port)
            )
        from cloudtap.capture.afpacket import RingConfig
        from cloudtap.capture.policy_source import PolicySource

        ring = RingConfig(
            block_size=agent.budget.ring_block_size,
            block_count=agent.budget.ring_block_count,
            snaplen=max(cap.snaplen, agent.policy_filter.max_snaplen if agent.policy_filter else 0),
            bpf=cap.bpf,
            fanout_group=(os.getpid() & 0xFFFF) if cap.workers > 1 else None,
        )
        names = self._initial_interfaces()
        for name in names:
            self._register(name)
        return PolicySource(names, ring, agent.policy_filter)  # the policies' combined program, or ring.bpf

    def follow(self, stop: threading.Event, errors: list[str]) -> None:
        """Start watching VM interfaces (the ``watcher`` thread, until ``stop``); its failures go to ``errors``."""
        from cloudtap.agent.interfaces import InterfaceWatcher

        cap = self.agent.config.capture
        self.watcher = InterfaceWatcher(cap.interface_pattern, libvirt_dirs=cap.libvirt_dirs)
        self._thread = threading.Thread(target=self._watch, args=(stop, errors), name="watcher", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Close the interface watcher (if one was started)."""
        if self.watcher is not None:
            self.watcher.close()

    def _initial_interfaces(self) -> list[str]:
        names = list(self.agent.config.capture.interfaces)
        if self.watcher is not None:
            for name in sorted(self.watcher.snapshot()):
                if name not in names:
                    names.append(name)
        return names

    def _register(self, name: str) -> None:
        info = self.watcher.current().get(name) if self.watcher is not None else None
        if info is not None:
            self.agent.points.register(name, info.vm_mac, info.domain, info.domain_uuid)
        else:
            self.agent.points.register(name)

    def _watch(self, stop: threading.Event, errors: list[str]) -> None:
        watcher = self.watcher
        while not stop.is_set():
            try:
                events = watcher.poll(0.2)
            except Exception as exc:  # noqa: BLE001 - the watcher must not die; report and retry
                errors.append(f"interface watcher: {exc}")
                stop.wait(1.0)
                continue
            for event in events:
                name = event.interface.name
                iface = event.interface
                if event.kind in ("added", "changed"):
                    self.agent.points.register(name, iface.vm_mac, iface.domain, iface.domain_uuid)
                if event.kind == "added":
                    for worker in self.agent.workers:
                        worker.with_source(lambda s, n=name: _safe(s.add_interface, n))  # type: ignore[misc]
                elif event.kind == "removed":
                    for worker in self.agent.workers:
                        worker.with_source(lambda s, n=name: _safe(s.remove_interface, n))  # type: ignore[misc]


def _safe(fn: Callable[[str], None], name: str) -> None:
    try:
        fn(name)
    except Exception as exc:  # noqa: BLE001 - an interface vanishing mid-call is normal
        log.warning("interface %s: %s", name, exc)

"""What the agent tells the controller about its host's VMs: domains, nova metadata, ports and their IPs.

Built at every heartbeat from the observation points (interface -> guest MAC, libvirt domain, uuid),
the IPs learned on each port (:mod:`cloudtap.agent.port_addresses`) and the libvirt domain files
(nova metadata, :mod:`cloudtap.agent.libvirt`; a :class:`DomainIndex` re-reads only changed files).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from cloudtap.agent.identity import ObservationPoints
from cloudtap.agent.libvirt import MAX_TEXT, DomainIndex


def _text(value: str | None) -> str:
    return (value or "")[:MAX_TEXT]


class VmReporter:
    """Heartbeat sections ``interfaces[].uuid/ips`` and ``vms``.

    Args:
        libvirt_dirs: the agent's libvirt domain directories (``capture.libvirt_dirs``).
    """

    def __init__(self, libvirt_dirs: Iterable[str | os.PathLike[str]]) -> None:
        self.index = DomainIndex(libvirt_dirs)

    def ports(self, points: ObservationPoints) -> dict[str, dict[str, Any]]:
        """Interface name -> ``{uuid, ips: [{ip, first_seen_ns, last_seen_ns}]}`` of every point with a VM."""
        seen = points.addresses.seen()
        out: dict[str, dict[str, Any]] = {}
        for point in points.all():
            if not point.vm_mac:
                continue  # a capture interface, not a VM's port
            out[point.interface] = {
                "uuid": point.domain_uuid,
                "ips": [{"ip": a.ip, "first_seen_ns": a.first_seen_ns, "last_seen_ns": a.last_seen_ns}
                        for a in seen.get(point.point_id, [])],
            }  # fmt: skip
        return out

    def vms(self, points: ObservationPoints) -> list[dict[str, Any]]:
        """One entry per libvirt domain behind a point: name, uuid and nova's metadata (``""`` when none)."""
        named = [p for p in points.all() if p.domain]
        if named:
            self.index.refresh()  # stats the files; parses only new or changed ones
        out: dict[str, dict[str, Any]] = {}
        for point in named:
            if not point.domain or point.domain in out:
                continue
            domain = self.index.domain(point.domain)
            nova = domain.nova if domain is not None else None
            out[point.domain] = {
                "domain": _text(point.domain),
                "uuid": _text(point.domain_uuid or (domain.uuid if domain is not None else "")),
                "name": _text(nova.name) if nova else "",
                "project_id": _text(nova.project_id) if nova else "",
                "project_name": _text(nova.project_name) if nova else "",
                "flavor": _text(nova.flavor) if nova else "",
                "user_id": _text(nova.user_id) if nova else "",
                "user_name": _text(nova.user_name) if nova else "",
            }
        return list(out.values())

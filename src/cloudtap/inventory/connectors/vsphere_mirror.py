"""vSphere port mirroring sessions (``VMwareVspanSession``): which VM NICs each session copies.

A vSphere distributed switch lists its sessions in ``config.vspanSession`` (``VMwareDVSConfigInfo``).
A session's source ports (``sourcePortTransmitted`` / ``sourcePortReceived``) name DVPort keys, or
``wildcardPortConnecteeType: [vmVnic]`` (every VM NIC of the switch); a VM NIC is on the DVPort of its
backing (``DistributedVirtualPortBackingInfo.port``: ``switchUuid`` + ``portKey``). An
``encapsulatedRemoteMirrorSource`` session with ``encapType`` ``erspan2``/``erspan3`` (or ``gre``)
sends its copies to ``destinationPort.ipAddress`` with its ``erspanId`` as the ERSPAN session id on
the wire: that is the ``session:<erspanId>`` key of the agent's ``mirror.sessions`` mapping, and
:func:`agent_mirror_sessions` builds that mapping (session -> MACs and names of its source VMs).

Not mapped: VLAN sources (RSPAN, ``vlans``), uplink sources (a host's physical port: its VMs are found
by inner MAC/IP), and sessions without an ``erspanId`` (no id on the wire to match).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class MirrorSession:
    """One port mirroring session of a distributed switch, resolved to VM NICs."""

    key: str  #: the session's key on its switch
    name: str
    switch: str  #: the switch's moref (``dvs-9``)
    session_type: str  #: ``encapsulatedRemoteMirrorSource``, ``dvPortMirror``, ...
    encap: str  #: ``erspan2``, ``erspan3``, ``gre`` or ''
    erspan_id: int | None  #: the session id in the mirrored packets
    enabled: bool
    destinations: tuple[str, ...]  #: collector IPs
    interfaces: tuple[str, ...]  #: interface keys (``<vm>/<device key>``) of the source ports
    macs: tuple[str, ...]  #: their MACs
    vms: tuple[str, ...]  #: their VM keys


def nic_ports(vm: str, devices: list[Any]) -> list[tuple[str, str, str, str]]:
    """``(switch uuid, port key, interface key, mac)`` of each VM NIC bound to a DVPort."""
    from pyVmomi import vim

    out = []
    for dev in devices or []:
        backing = getattr(dev, "backing", None)
        if not isinstance(dev, vim.vm.device.VirtualEthernetCard) or not isinstance(
            backing, vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo
        ):
            continue
        port = backing.port
        if port is None or not port.portKey:
            continue
        out.append(
            (str(port.switchUuid or ""), str(port.portKey), f"{vm}/{dev.key}", (dev.macAddress or "").lower())
        )
    return out


def sessions_of(
    switch: str, uuid: str, sessions: list[Any], ports: list[tuple[str, str, str, str, str]]
) -> list[MirrorSession]:
    """Resolve one switch's ``config.vspanSession`` against ``ports`` (uuid, port key, iface, mac, vm)."""
    mine = [p for p in ports if p[0] == uuid or not p[0]]
    by_key = {p[1]: p for p in mine}
    out = []
    for s in sessions or []:
        picked: dict[str, tuple[str, str, str, str, str]] = {}
        for src in (s.sourcePortTransmitted, s.sourcePortReceived):
            if src is None:
                continue
            for key in src.portKey or []:
                if key in by_key:
                    picked[by_key[key][2]] = by_key[key]
            if "vmVnic" in (src.wildcardPortConnecteeType or []):
                picked.update({p[2]: p for p in mine})
        dest = s.destinationPort
        chosen = sorted(picked.values(), key=lambda p: p[2])
        out.append(
            MirrorSession(
                key=str(s.key or ""),
                name=str(s.name or s.key or ""),
                switch=switch,
                session_type=str(s.sessionType or ""),
                encap=str(s.encapType or ""),
                erspan_id=int(s.erspanId) if s.erspanId is not None else None,
                enabled=bool(s.enabled),
                destinations=tuple(str(ip) for ip in ((dest.ipAddress if dest is not None else None) or [])),
                interfaces=tuple(p[2] for p in chosen),
                macs=tuple(p[3] for p in chosen),
                vms=tuple(dict.fromkeys(p[4] for p in chosen)),
            )
        )
    return out


def agent_mirror_sessions(
    sessions: list[MirrorSession], vm_names: dict[str, str]
) -> dict[str, dict[str, Any]]:
    """The agent's ``mirror.sessions`` mapping for these sessions (enabled, with an ERSPAN id).

    Args:
        sessions: from :attr:`VSphereConnector.mirror_sessions`.
        vm_names: VM key -> name (names label the records' ``vm_domain``).
    """
    out: dict[str, dict[str, Any]] = {}
    for s in sessions:
        if not s.enabled or s.erspan_id is None or not s.macs:
            continue
        vm_of = dict(zip(s.macs, (i.rsplit("/", 1)[0] for i in s.interfaces), strict=True))
        entry = out.setdefault(f"session:{s.erspan_id}", {"name": s.name, "vms": {}})
        entry["vms"].update({mac: vm_names.get(vm, vm) for mac, vm in vm_of.items() if mac})
    return out

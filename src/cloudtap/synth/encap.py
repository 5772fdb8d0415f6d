"""How each session's frames are wrapped on the wire: plain, VXLAN, GRE-TEB or ERSPAN II.

* ``vxlan`` / ``gre-teb``: frames between VMs on different hosts travel host to host in a tunnel
  keyed by the client project's VNI (used in both directions, so a flow keeps one key); frames
  between VMs on the same host never reach the fabric and are captured plain on the host bridge.
* ``erspan2``: every frame is mirrored by the sending VM's host to the collector, GRE with a
  sequence number, ERSPAN session id = client project index + 1, the VM frame (with its VLAN tag).
* ``none``: the VM frame as is, 802.1Q-tagged with the client project's VLAN when it has one.
"""

from __future__ import annotations

import numpy as np

from cloudtap.schema.packet import TUNNEL_ERSPAN2, TUNNEL_GRE, TUNNEL_NONE, TUNNEL_VXLAN
from cloudtap.synth._dtypes import P_APP, WIRE_DTYPE
from cloudtap.synth.cloud import Cloud
from cloudtap.synth.sessions import SessionSet

ENCAP_NONE = 0
ENCAP_VXLAN = 1
ENCAP_GRE_TEB = 2
ENCAP_ERSPAN2 = 3
ENCAP_CODES = {"none": ENCAP_NONE, "vxlan": ENCAP_VXLAN, "gre-teb": ENCAP_GRE_TEB, "erspan2": ENCAP_ERSPAN2}
#: outer bytes before the VM's Ethernet header: Eth + IPv4 + (UDP + VXLAN | GRE+key | GRE+seq + ERSPAN II)
OVERHEAD = {ENCAP_NONE: 0, ENCAP_VXLAN: 50, ENCAP_GRE_TEB: 42, ENCAP_ERSPAN2: 50}
#: cloudtap.schema.packet TUNNEL_* of each encapsulation code
TUNNEL_TYPE = np.asarray([TUNNEL_NONE, TUNNEL_VXLAN, TUNNEL_GRE, TUNNEL_ERSPAN2], dtype=np.uint8)


def default_mtu(encapsulation: str) -> int:
    """VM MTU: 1450 inside VXLAN / GRE-TEB overlays (the fabric stays at 1500), else 1500."""
    return 1450 if encapsulation in ("vxlan", "gre-teb") else 1500


def erspan_session(project_index: int) -> int:
    """ERSPAN session id (10 bits) used for a project's mirrored traffic."""
    return (project_index + 1) & 0x3FF


def wire_table(sessions: SessionSet, cloud: Cloud, encapsulation: str) -> np.ndarray:
    """Addresses, ports and tunnel of every session, as WIRE_DTYPE rows for frame assembly.

    Args:
        sessions: the sessions.
        cloud: the resolved cloud.
        encapsulation: ``none``, ``vxlan``, ``gre-teb`` or ``erspan2``.

    Returns:
        One WIRE_DTYPE row per session.
    """
    c = sessions.cols
    client, server = c["client"], c["server"]
    wire = np.zeros(len(sessions), WIRE_DTYPE)
    wire["cmac"], wire["smac"] = cloud.vm_mac[client], cloud.vm_mac[server]
    wire["cip"], wire["sip"] = cloud.vm_ip[client], cloud.vm_ip[server]
    chost, shost = cloud.vm_host[client], cloud.vm_host[server]
    wire["chost"], wire["shost"] = chost, shost
    wire["chost_ip"], wire["shost_ip"] = cloud.host_ip[chost], cloud.host_ip[shost]
    wire["chost_mac"], wire["shost_mac"] = cloud.host_mac[chost], cloud.host_mac[shost]
    wire["cport"], wire["sport"] = c["cport"], c["sport"]
    wire["proto"] = c["proto"]
    wire["svc"] = c["svc"]
    wire["app"] = sessions.params[c["svc"], P_APP].astype(np.uint8) if len(sessions) else 0
    proj = cloud.vm_project[client]
    code = ENCAP_CODES[encapsulation]
    if code in (ENCAP_VXLAN, ENCAP_GRE_TEB):
        remote = chost != shost
        wire["encap"] = np.where(remote, code, ENCAP_NONE)
        wire["tunnel_id"] = np.where(remote, cloud.project_vni[proj], 0)
        wire["vlan"] = np.where(remote, 0, cloud.project_vlan[proj])
    elif code == ENCAP_ERSPAN2:
        wire["encap"] = code
        wire["tunnel_id"] = (proj + 1) & 0x3FF
        wire["vlan"] = cloud.project_vlan[proj]
    else:
        wire["vlan"] = cloud.project_vlan[proj]
    return wire

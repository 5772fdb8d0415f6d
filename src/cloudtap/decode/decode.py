"""Decode a FrameBatch into one ``PACKET_DTYPE`` row per frame.

What the row describes:

* With ``DecodeConfig.decapsulate`` (default) the row keys on the **innermost** IP packet:
  VXLAN, Geneve, GRE (IP, TEB, MPLS, PPTP), GRE-in-UDP, MPLS-in-UDP, GTP-U, Teredo, ERSPAN
  I/II/III and IP-in-IP (6in4/6to4, 4in6) are opened up to ``MAX_TUNNEL_DEPTH`` levels. The
  innermost tunnel's type, id (VNI, GRE key or call id, ERSPAN session, TEID, top label) and outer
  addresses are recorded, ``tunnel_depth`` counts all levels and ``FLAG_TUNNEL`` is set. ``wire_len`` is always the whole frame: outer packets of a tunnel are
  never metered separately.
* A tunnel is only entered when its header is fully captured and valid, and never from an IP
  fragment (both fragments then key on the outer packet). When the inner packet turns out
  malformed, or is cut before its IP header, the row falls back to the tunnel packet itself.
  A well-formed inner non-IP frame (ARP in VXLAN) stays ``STATUS_NOT_IP``.
* VXLAN, Geneve, GRE-in-UDP and MPLS-in-UDP are recognised by the UDP *destination* port, GTP-U
  and Teredo by either port (``DecodeConfig``). docs/flow-semantics.md ("Which layer a flow is
  keyed on") has the table.
* Link types: Ethernet, Linux SLL/SLL2, raw IP (101, 228, 229, 12, 14), BSD NULL/LOOP (either
  byte order), PPP (9, 50) and NFLOG (239); others give ``STATUS_UNKNOWN_LINKTYPE``. Ethernet
  walks any number of 802.1Q/802.1ad/0x9100 tags, Cisco VN-Tags and 802.1BR E-tags, LLC/SNAP,
  MPLS (pseudo-wire with control word too), PPPoE sessions and 802.1ah PBB.
* ``vlan``, ``src_mac`` and ``dst_mac`` come from the last Ethernet header before the innermost
  IP (IP-in-IP and GRE-IP keep the outer Ethernet's).

Status and metering: the meter counts ``STATUS_OK`` rows and ``STATUS_TRUNCATED`` rows with
``ip_ver != 0`` (addresses, proto and ``ip_len`` known). ``FLAG_L4`` means the fixed L4 header
(TCP 20, UDP 8, ICMP 4/8 for echo, SCTP/DCCP 12 bytes) was captured; TCP options cut by the snap
length do not make a row truncated. A cut L4 header still yields its ports when its first 4
bytes were captured (status truncated, no ``FLAG_L4``). ``ip_len`` comes from the IP
header even when the frame was cut (a zero IPv4 total length or IPv6 payload length — TSO,
jumbograms — falls back to the frame's wire length). ``payload_len`` is ``ip_len`` minus the IP
and L4 headers, clamped at 0. ICMP echo uses the identifier as both ports; other ICMP types use
``sport = 0, dport = type << 8 | code``. Later IP fragments carry no ports: see
:class:`~cloudtap.decode.fragments.FragmentTracker`.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from cloudtap.capture.frames import FrameBatch
from cloudtap.decode._kernels import decode_batch
from cloudtap.decode._walk import (
    MAX_TUNNEL_DEPTH,
    PORT_GENEVE,
    PORT_GRE_UDP,
    PORT_GTPU,
    PORT_MPLS_UDP,
    PORT_TEREDO,
    PORT_VXLAN,
)
from cloudtap.decode.config import DecodeConfig
from cloudtap.schema.packet import PACKET_DTYPE, STATUS_NAMES

_DEFAULT_CONFIG = DecodeConfig()


@lru_cache(maxsize=32)
def _port_table(
    vxlan_ports: tuple[int, ...],
    geneve_ports: tuple[int, ...],
    gtpu_ports: tuple[int, ...] = (),
    teredo_ports: tuple[int, ...] = (),
    gre_udp_ports: tuple[int, ...] = (),
    mpls_udp_ports: tuple[int, ...] = (),
) -> np.ndarray:
    """UDP port -> PORT_* lookup table: low nibble by destination port, high nibble by source port."""
    table = np.zeros(65536, dtype=np.uint8)
    table[list(vxlan_ports)] = PORT_VXLAN
    table[list(geneve_ports)] = PORT_GENEVE
    table[list(gre_udp_ports)] = PORT_GRE_UDP
    table[list(mpls_udp_ports)] = PORT_MPLS_UDP
    for kind, ports in ((PORT_GTPU, gtpu_ports), (PORT_TEREDO, teredo_ports)):
        table[list(ports)] = kind | (kind << 4)  # either side of the tunnel's well-known port
    table.flags.writeable = False
    return table


def _readonly(arr: np.ndarray) -> np.ndarray:
    """Read-only view, so the kernel is compiled for one array flavour whatever the source."""
    view = arr.view()
    view.flags.writeable = False
    return view


def _column(frames: FrameBatch, name: str, dtype: type, n: int) -> np.ndarray:
    arr: np.ndarray = np.ascontiguousarray(getattr(frames, name), dtype=dtype)
    if arr.shape != (n,):
        raise ValueError(f"FrameBatch.{name} has shape {arr.shape}, expected ({n},)")
    return _readonly(arr)


def decode_frames(
    frames: FrameBatch,
    config: DecodeConfig = _DEFAULT_CONFIG,
    out: np.ndarray | None = None,
    counts: np.ndarray | None = None,
) -> np.ndarray:
    """Decode every frame of ``frames``.

    Args:
        frames: raw frames; frames reaching past the end of ``frames.data`` are decoded as cut there.
        config: tunnel ports and decapsulation switch.
        out: optional ``PACKET_DTYPE`` array with at least ``len(frames)`` rows to fill (reused
            between batches to avoid allocation).
        counts: optional ``int64`` array of ``len(STATUS_NAMES)`` running totals: each decoded row adds
            one to its status (cheaper than :func:`decode_counts` per batch).

    Returns:
        ``PACKET_DTYPE`` array of ``len(frames)`` rows (a view of ``out`` when given), row ``i``
        describing frame ``i`` (``frame_index == i``) with its ``status``.
    """
    n = len(frames)
    data = frames.data
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 1:
        raise ValueError("FrameBatch.data must be a 1-D uint8 array")
    data = _readonly(np.ascontiguousarray(data))
    offset = _column(frames, "offset", np.int64, n)
    cap_len = _column(frames, "cap_len", np.uint32, n)
    wire_len = _column(frames, "wire_len", np.uint32, n)
    ts_ns = _column(frames, "ts_ns", np.int64, n)
    linktype = _column(frames, "linktype", np.uint16, n)
    if out is None:
        out = np.empty(n, dtype=PACKET_DTYPE)
    else:
        if out.dtype != PACKET_DTYPE or out.ndim != 1 or out.shape[0] < n:
            raise ValueError(f"out must be a 1-D PACKET_DTYPE array with at least {n} rows")
        if not (out.flags.c_contiguous and out.flags.writeable):
            raise ValueError("out must be C-contiguous and writeable")
        out = out[:n]
    interface = _column(frames, "interface", np.uint16, n)
    if counts is None:
        counts = np.zeros(len(STATUS_NAMES), np.int64)
    elif counts.dtype != np.int64 or counts.shape != (len(STATUS_NAMES),) or not counts.flags.writeable:
        raise ValueError(f"counts must be a writeable int64 array of {len(STATUS_NAMES)} totals")
    ports = _port_table(*config.port_lists().values())
    depth = MAX_TUNNEL_DEPTH if config.decapsulate else 0
    decode_batch(data, offset, cap_len, wire_len, ts_ns, linktype, interface, ports, depth, out, counts)
    return out


def decode_counts(packets: np.ndarray) -> dict[str, int]:
    """Count decoded rows per status name (every status present, zeros included)."""
    counts = np.bincount(packets["status"], minlength=len(STATUS_NAMES))
    return {name: int(counts[i]) for i, name in enumerate(STATUS_NAMES)}

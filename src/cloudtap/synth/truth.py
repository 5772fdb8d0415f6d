"""The ground-truth flow table: what a perfect meter must report for the synthetic capture.

One row per TCP connection, UDP conversation or ICMP echo conversation, computed from the very
packet plan the frames are built from, so it matches the pcap exactly.

Conventions (the same as :mod:`cloudtap.schema.flow`): the client sent the SYN (UDP/ICMP: the
first request); ``bytes_*`` are innermost IP total lengths; ``retrans_*`` count re-sent segments
with payload and SYN retries (Wireshark's ``tcp.analysis.retransmission``); ``zero_window_*``
count segments advertising window 0 without SYN/FIN/RST; ``rtt_server_us`` is SYN to SYN-ACK and
``rtt_client_us`` SYN-ACK to ACK (-1 when not seen); ``close_type`` is a ``CLOSE_NAMES`` name:
``forced_end`` marks a TCP connection cut by the end of the capture, UDP/ICMP are ``timeout``.
"""

from __future__ import annotations

import ipaddress

import numpy as np
import pyarrow as pa

from cloudtap.schema.flow import CLOSE_FORCED, CLOSE_NAMES, CLOSE_TIMEOUT
from cloudtap.schema.packet import PROTO_TCP
from cloudtap.synth.cloud import Cloud
from cloudtap.synth.encap import TUNNEL_TYPE
from cloudtap.synth.sessions import SessionSet

_NO_FLAGS = 0x01 | 0x02 | 0x04  # FIN SYN RST


def _count(sess: np.ndarray, mask: np.ndarray, n: int, weights: np.ndarray | None = None) -> np.ndarray:
    w = None if weights is None else weights[mask].astype(np.float64)
    return np.bincount(sess[mask], weights=w, minlength=n)


def build_truth(
    sessions: SessionSet,
    cloud: Cloud,
    wire: np.ndarray,
    plan: np.ndarray,
    ip_len: np.ndarray,
    wire_len: np.ndarray,
    hs_times: np.ndarray,
    trunc: np.ndarray,
) -> pa.Table:
    """Aggregate the time-sorted packet plan into one truth row per session that sent a packet.

    Args:
        sessions: the sessions.
        cloud: the resolved cloud (names and addresses).
        wire: WIRE_DTYPE per session (ports, VLAN, tunnel).
        plan: PLAN_DTYPE rows sorted by time (as written to the pcap).
        ip_len, wire_len: per packet, from frame assembly.
        hs_times: int64 [n, 3] SYN, SYN-ACK, ACK times (-1 if not sent).
        trunc: uint8 [n], 1 when the capture end cut the session.

    Returns:
        The truth table, sorted by first packet time.
    """
    n = len(sessions)
    c = sessions.cols
    sess = plan["sess"].astype(np.int64)
    c2s = plan["dir"] == 0
    s2c = ~c2s
    tcp_pkt = plan["proto"] == PROTO_TCP
    retr = plan["retrans"] == 1
    zw = tcp_pkt & (plan["win"] == 0) & ((plan["flags"] & _NO_FLAGS) == 0)
    plen = plan["plen"]
    pkts_c = _count(sess, c2s, n)
    pkts_s = _count(sess, s2c, n)
    keep = (pkts_c + pkts_s) > 0
    first = np.full(n, -1, np.int64)
    last = np.full(n, -1, np.int64)
    uniq, idx = np.unique(sess, return_index=True)
    first[uniq] = plan["ts"][idx]
    uniq_r, idx_r = np.unique(sess[::-1], return_index=True)
    last[uniq_r] = plan["ts"][::-1][idx_r]
    is_tcp = c["proto"] == PROTO_TCP
    close = np.where(is_tcp, np.where(trunc == 1, CLOSE_FORCED, c["close"]), CLOSE_TIMEOUT)
    syn, synack, ack = hs_times[:, 0], hs_times[:, 1], hs_times[:, 2]
    rtt_s = np.where((syn >= 0) & (synack >= 0), (synack - syn) / 1000.0, -1.0)
    rtt_c = np.where((synack >= 0) & (ack >= 0), (ack - synack) / 1000.0, -1.0)
    vm_ip_text = np.asarray([str(ipaddress.IPv4Address(int(v))) for v in cloud.vm_ip], dtype=object)
    vm_names = np.asarray(cloud.vm_names, dtype=object)
    proj_names = np.asarray(cloud.project_names, dtype=object)
    svc_names = np.asarray(sessions.svc_names or [""], dtype=object)
    inc_names = np.asarray([*sessions.incident_names, ""], dtype=object)
    client, server = c["client"], c["server"]
    cols: dict[str, tuple[np.ndarray, pa.DataType]] = {
        "proto": (c["proto"], pa.uint8()),
        "client_ip": (vm_ip_text[client], pa.string()),
        "client_port": (wire["cport"], pa.uint16()),
        "server_ip": (vm_ip_text[server], pa.string()),
        "server_port": (wire["sport"], pa.uint16()),
        "packets_c2s": (pkts_c, pa.uint64()),
        "packets_s2c": (pkts_s, pa.uint64()),
        "bytes_c2s": (_count(sess, c2s, n, ip_len), pa.uint64()),
        "bytes_s2c": (_count(sess, s2c, n, ip_len), pa.uint64()),
        "payload_bytes_c2s": (_count(sess, c2s, n, plen), pa.uint64()),
        "payload_bytes_s2c": (_count(sess, s2c, n, plen), pa.uint64()),
        "l2_bytes_c2s": (_count(sess, c2s, n, wire_len), pa.uint64()),
        "l2_bytes_s2c": (_count(sess, s2c, n, wire_len), pa.uint64()),
        "first_ns": (first, pa.int64()),
        "last_ns": (last, pa.int64()),
        "retrans_c2s": (_count(sess, c2s & retr, n), pa.uint32()),
        "retrans_s2c": (_count(sess, s2c & retr, n), pa.uint32()),
        "zero_window_c2s": (_count(sess, c2s & zw, n), pa.uint32()),
        "zero_window_s2c": (_count(sess, s2c & zw, n), pa.uint32()),
        "close_type": (np.asarray(CLOSE_NAMES, dtype=object)[close], pa.string()),
        "rtt_server_us": (rtt_s, pa.float64()),
        "rtt_client_us": (rtt_c, pa.float64()),
        "vlan": (wire["vlan"], pa.uint16()),
        "tunnel_type": (TUNNEL_TYPE[wire["encap"]], pa.uint8()),
        "tunnel_id": (wire["tunnel_id"], pa.uint32()),
        "client_project": (proj_names[cloud.vm_project[client]], pa.string()),
        "client_vm": (vm_names[client], pa.string()),
        "server_project": (proj_names[cloud.vm_project[server]], pa.string()),
        "server_vm": (vm_names[server], pa.string()),
        "service": (svc_names[c["svc"]], pa.string()),
        "incident": (inc_names[c["incident"]], pa.string()),
    }
    order = np.flatnonzero(keep)
    order = order[np.argsort(first[order], kind="stable")]
    arrays = []
    for values, typ in cols.values():
        v = values[order]
        if pa.types.is_integer(typ) and v.dtype.kind == "f":
            v = np.rint(v).astype(np.int64)
        arrays.append(pa.array(v.tolist() if v.dtype == object else v, type=typ))
    return pa.table(arrays, names=list(cols))

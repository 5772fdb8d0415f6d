"""A policy's tcpdump filter run on stored flows: each flow direction becomes one representative frame
(:mod:`._dry_run_frames`, numba) that the filter (libpcap-compiled, run by the numba BPF VM) accepts or not.

Exact for filters on addresses, ports, protocol, VLAN and MACs (the client->server frame goes from the client
MAC to the server MAC; a one-way flow's silent side has no MAC); not for filters on packet length, TCP
flags, ICMP types or payload, which every packet of a flow does not share: the frame is a bare header (TCP:
ACK only; ICMP: the server port's two bytes as type and code).
"""

from __future__ import annotations

import numpy as np

from cloudtap.capture.bpf import compile_filter
from cloudtap.capture.frames import FrameBatch
from cloudtap.errors import FilterError
from cloudtap.server.controller import _dry_run_frames as _k

#: columns a table of flow keys must have (``UInt64`` address halves, the rest integers)
COLUMNS = ("client_hi", "client_lo", "server_hi", "server_lo", "client_port", "server_port", "proto", "ip_ver",
           "vlan", "client_mac", "server_mac")  # fmt: skip


def _u64(values: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(values, dtype=np.uint64)


def directions_accepted(expression: str, keys: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Whether ``expression`` accepts the client->server and the server->client packets of each flow.

    Args:
        expression: a tcpdump filter (Ethernet frames).
        keys: the :data:`COLUMNS` as equal-length arrays.
    Returns:
        ``(c2s, s2c)``, two ``bool[n]``.
    Raises:
        FilterError: the expression does not compile; ValueError: a column is missing or of another length.
    """
    missing = [c for c in COLUMNS if c not in keys]
    if missing:
        raise ValueError(f"flow keys lack {', '.join(missing)}")
    n = len(keys["client_lo"])
    if any(len(keys[c]) != n for c in COLUMNS):
        raise ValueError("flow key columns differ in length")
    program = compile_filter(expression, linktype=1)
    if n == 0:
        return np.zeros(0, np.bool_), np.zeros(0, np.bool_)
    k = {c: _u64(keys[c]) for c in COLUMNS}
    out = []
    for src, dst in (("client", "server"), ("server", "client")):
        data = np.zeros(n * _k.STRIDE, np.uint8)
        cap = np.zeros(n, np.uint32)
        _k.build_frames(k[f"{src}_hi"], k[f"{src}_lo"], k[f"{dst}_hi"], k[f"{dst}_lo"], k[f"{src}_port"],
                        k[f"{dst}_port"], k["proto"], k["ip_ver"], k["vlan"], k[f"{src}_mac"], k[f"{dst}_mac"], data,
                        cap)  # fmt: skip
        frames = FrameBatch(data=data, offset=np.arange(n, dtype=np.int64) * _k.STRIDE, cap_len=cap, wire_len=cap.copy(),
                            ts_ns=np.zeros(n, np.int64), linktype=np.ones(n, np.uint16),
                            interface=np.zeros(n, np.uint16))  # fmt: skip
        out.append(program.match(frames))
    return out[0], out[1]


__all__ = ["COLUMNS", "FilterError", "directions_accepted"]

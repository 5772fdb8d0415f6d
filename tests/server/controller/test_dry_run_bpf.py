"""A policy's tcpdump filter on stored flow keys: each direction's representative frame is accepted exactly
when libpcap's program accepts such a packet (addresses, ports, protocol, VLAN, MACs; IPv4 and IPv6)."""

from __future__ import annotations

import ipaddress

import numpy as np
import pytest

from cloudtap.errors import FilterError
from cloudtap.server.controller.dry_run_bpf import directions_accepted


def halves(ip: str) -> tuple[int, int]:
    a = ipaddress.ip_address(ip)
    n = int(ipaddress.IPv6Address(f"::ffff:{a}")) if a.version == 4 else int(a)
    return n >> 64, n & (2**64 - 1)


FLOWS = [  # client, server, client port, server port, proto, vlan
    ("10.0.0.1", "10.0.0.2", 40000, 5432, 6, 0),
    ("10.0.0.1", "10.0.0.3", 40001, 53, 17, 101),
    ("2001:db8::1", "2001:db8::2", 5000, 443, 6, 0),
    ("10.0.0.1", "10.0.0.2", 7, 7, 1, 0),  # ICMP echo: both ports hold the identifier
]


def keys() -> dict[str, np.ndarray]:
    cols: dict[str, list[int]] = {k: [] for k in ("client_hi", "client_lo", "server_hi", "server_lo")}
    for client, server, *_ in FLOWS:
        (ch, cl), (sh, sl) = halves(client), halves(server)
        cols["client_hi"].append(ch)
        cols["client_lo"].append(cl)
        cols["server_hi"].append(sh)
        cols["server_lo"].append(sl)
    out = {k: np.array(v, np.uint64) for k, v in cols.items()}
    for i, name in enumerate(("client_port", "server_port", "proto", "vlan")):
        out[name] = np.array([f[2 + i] for f in FLOWS])
    out["ip_ver"] = np.array([ipaddress.ip_address(f[0]).version for f in FLOWS])
    out["client_mac"] = np.full(len(FLOWS), 0x525400000001, np.uint64)
    out["server_mac"] = np.full(len(FLOWS), 0x525400000002, np.uint64)
    return out


@pytest.mark.parametrize(("expression", "c2s", "s2c"), [
    ("tcp port 5432", [1, 0, 0, 0], [1, 0, 0, 0]),
    ("dst port 5432", [1, 0, 0, 0], [0, 0, 0, 0]),
    ("src port 5432", [0, 0, 0, 0], [1, 0, 0, 0]),
    ("vlan 101 and udp port 53", [0, 1, 0, 0], [0, 1, 0, 0]),
    ("udp", [0, 0, 0, 0], [0, 0, 0, 0]),  # tagged frames need `vlan` first, as in tcpdump
    ("ip6 and tcp dst port 443", [0, 0, 1, 0], [0, 0, 0, 0]),
    ("icmp", [0, 0, 0, 1], [0, 0, 0, 1]),  # (ICMP types are not in the key of an echo flow: not judged)
    ("ether src 52:54:00:00:00:01", [1, 1, 1, 1], [0, 0, 0, 0]),
    ("src host 10.0.0.1", [1, 0, 0, 1], [0, 0, 0, 0]),
    ("net 2001:db8::/32", [0, 0, 1, 0], [0, 0, 1, 0]),
])  # fmt: skip
def test_each_direction_is_judged_as_libpcap_judges_its_packets(
    expression: str, c2s: list[int], s2c: list[int]
) -> None:
    got_c, got_s = directions_accepted(expression, keys())
    assert got_c.tolist() == [bool(x) for x in c2s] and got_s.tolist() == [bool(x) for x in s2c]


def test_bad_input_is_refused_by_name() -> None:
    with pytest.raises(FilterError):
        directions_accepted("tcp port", keys())
    broken = keys()
    del broken["vlan"]
    with pytest.raises(ValueError, match="vlan"):
        directions_accepted("tcp", broken)
    empty = {k: v[:0] for k, v in keys().items()}
    assert [len(x) for x in directions_accepted("tcp", empty)] == [0, 0]

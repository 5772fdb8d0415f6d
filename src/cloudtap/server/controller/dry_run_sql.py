"""SQL pieces of a dry-run: which side of a stored flow or edge is a selected VM, where it was observed, and
which halves (client->server, server->client) a direction keeps. Every value is a bound parameter."""

from __future__ import annotations

from cloudtap.server.analyse._sql import Params
from cloudtap.server.controller.dry_run_selection import Selection

#: an IPv6 column's two 64-bit halves (IPv4 mapped in the low half)
ADDRESS_HALVES = ("reinterpretAsUInt64(reverse(substring(reinterpretAsString({col}), 1, 8)))",
                  "reinterpretAsUInt64(reverse(substring(reinterpretAsString({col}), 9, 8)))")  # fmt: skip


def sides(sel: Selection, params: Params, macs: bool) -> tuple[str, str]:
    """SQL truth of "the client side is selected" and "the server side is selected"."""
    ids = params.bind(sel.vm_ids, "Array(UInt32)")
    out = []
    for side in ("client", "server"):
        if macs:
            m = params.bind(sel.macs, "Array(UInt64)")
            ips = params.bind(sel.ips, "Array(String)")
            out.append(f"(has({m}, {side}_mac) OR ({side}_mac = 0 AND has({ids}, {side}_vm_id)) "
                       f"OR has(arrayMap(x -> toIPv6(x), {ips}), {side}_ip))")  # fmt: skip
        else:
            ips = params.bind(sel.all_ips, "Array(String)")
            out.append(f"(has({ids}, {side}_vm_id) OR has(arrayMap(x -> toIPv6(x), {ips}), {side}_ip))")
    return out[0], out[1]


def observed(sel: Selection, params: Params) -> str:
    """Recorded at a selected VM's port, or at no VM port."""
    return f"(vm_mac = '' OR has({params.bind(sel.mac_texts, 'Array(String)')}, lower(vm_mac)))"


def halves(direction: str, c_sel: str, s_sel: str, c2s: str, s2c: str) -> str:
    """The sum of the halves ``direction`` keeps (``both``: every packet; ``from_vm``: those a selected side
    sends; ``to_vm``: those it receives)."""
    if direction == "from_vm":
        return f"(if({c_sel}, {c2s}, 0) + if({s_sel}, {s2c}, 0))"
    if direction == "to_vm":
        return f"(if({s_sel}, {c2s}, 0) + if({c_sel}, {s2c}, 0))"
    return f"({c2s} + {s2c})"


def flow_keys(edges: bool) -> str:
    """The columns :func:`~.dry_run_bpf.directions_accepted` takes, as SQL (edges: no client port or MACs)."""
    cols = []
    for side in ("client", "server"):
        hi, lo = (h.format(col=f"{side}_ip") for h in ADDRESS_HALVES)
        cols += [f"{hi} AS {side}_hi", f"{lo} AS {side}_lo"]
    if edges:
        cols += ["toUInt16(0) AS client_port", "server_port", "proto",
                 "if(client_hi = 0 AND bitShiftRight(client_lo, 32) = 65535, 4, 6) AS ip_ver", "vlan",
                 "toUInt64(0) AS client_mac", "toUInt64(0) AS server_mac"]  # fmt: skip
    else:
        cols += ["client_port", "server_port", "proto", "ip_ver", "vlan", "client_mac", "server_mac"]
    return ", ".join(cols)

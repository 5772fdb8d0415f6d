"""The dry-run of a policy with its own tcpdump filter: stored flows (and edges) grouped by their keys, each
direction's representative frame run through the filter (:mod:`.dry_run_bpf`), the accepted halves summed.

Edges have no client port and no MACs: on them, a filter naming a client port or a MAC is not exact (the
peaks), while the flow figures are.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cloudtap.server.analyse._sql import Params, flow_time_where, table, time_where
from cloudtap.server.analyse.window import Window
from cloudtap.server.controller.dry_run_bpf import COLUMNS, directions_accepted
from cloudtap.server.controller.dry_run_selection import Selection
from cloudtap.server.controller.dry_run_sql import flow_keys, observed, sides

_GROUP = "client_ip, server_ip, client_port, server_port, proto, ip_ver, vlan, client_mac, server_mac"
_EDGE_GROUP = "client_ip, server_ip, server_port, proto, vlan"
_SUMS = ("packets_c2s", "packets_s2c", "bytes_c2s", "bytes_s2c")


def _gates(direction: str, c_sel: np.ndarray, s_sel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which halves (client->server, server->client) ``direction`` keeps, per row."""
    if direction == "from_vm":
        return c_sel, s_sel
    if direction == "to_vm":
        return s_sel, c_sel
    return np.ones(len(c_sel), np.bool_), np.ones(len(c_sel), np.bool_)


def _accepted(table_: Any, bpf: str, direction: str) -> tuple[np.ndarray, np.ndarray]:
    keys = {c: table_.column(c).to_numpy() for c in COLUMNS}
    ok_c, ok_s = directions_accepted(bpf, keys)
    gate_c, gate_s = _gates(direction, table_.column("c_sel").to_numpy().astype(bool),
                            table_.column("s_sel").to_numpy().astype(bool))  # fmt: skip
    return ok_c & gate_c, ok_s & gate_s


def _sum(table_: Any, c2s: str, s2c: str, take_c: np.ndarray, take_s: np.ndarray) -> np.ndarray:
    total: np.ndarray = (
        table_.column(c2s).to_numpy().astype(np.int64) * take_c
        + table_.column(s2c).to_numpy().astype(np.int64) * take_s
    )
    return total


def filtered_flow_figures(
    store: Any, sel: Selection, window: Window, direction: str, bpf: str
) -> list[dict[str, Any]]:
    """:func:`~.dry_run.flow_figures` with the policy's filter applied to each flow's two directions."""
    if not sel.vms:
        return []
    params = Params()
    c_sel, s_sel = sides(sel, params, macs=True)
    sums = ", ".join(f"toUInt64(sum({c})) AS {c}" for c in (*_SUMS, "l2_bytes_c2s", "l2_bytes_s2c"))
    sql = (f"SELECT agent_id, c_sel, s_sel, {flow_keys(edges=False)}, {sums}, "
           "toUInt64(uniqExact((interface_name, flow_id))) AS flows "
           f"FROM (SELECT *, {c_sel} AS c_sel, {s_sel} AS s_sel FROM {table(store.database, 'flow_log')} "
           f"WHERE {flow_time_where(window.start_ns, window.end_ns, params)} AND {observed(sel, params)}) "
           f"WHERE c_sel OR s_sel GROUP BY agent_id, c_sel, s_sel, {_GROUP}")  # fmt: skip
    got = store.query_arrow(sql, params.values)
    if not got.num_rows:
        return []
    take_c, take_s = _accepted(got, bpf, direction)
    packets = _sum(got, "packets_c2s", "packets_s2c", take_c, take_s)
    ip_bytes = _sum(got, "bytes_c2s", "bytes_s2c", take_c, take_s)
    frames = _sum(got, "l2_bytes_c2s", "l2_bytes_s2c", take_c, take_s)
    flows = got.column("flows").to_numpy().astype(np.int64) * (packets > 0)
    agents, where = np.unique(np.array(got.column("agent_id").to_pylist(), dtype=object), return_inverse=True)
    out = []
    for i, agent in enumerate(agents):  # one per agent
        mine = where == i
        if packets[mine].sum():
            out.append({"agent_id": agent, "flows": int(flows[mine].sum()), "packets": int(packets[mine].sum()),
                        "bytes": int(ip_bytes[mine].sum()), "frame_bytes": int(frames[mine].sum())})  # fmt: skip
    return out


def filtered_per_second(store: Any, sel: Selection, window: Window, rollup: str, direction: str, bpf: str,
                        agents: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Packets and IP bytes the filter accepts, aligned with the rows ``(agents[i], times[i])`` of
    :func:`~.dry_run.per_second` (which holds every (agent, interval) with selected traffic)."""
    params = Params()
    c_sel, s_sel = sides(sel, params, macs=False)
    sums = ", ".join(f"toUInt64(sum({c})) AS {c}" for c in _SUMS)
    sql = (f"SELECT agent_id, toInt64(toUnixTimestamp(time)) AS t, c_sel, s_sel, {flow_keys(edges=True)}, {sums} "
           f"FROM (SELECT *, {c_sel} AS c_sel, {s_sel} AS s_sel FROM {table(store.database, rollup)} "
           f"WHERE {time_where(window.start_ns, window.end_ns, params)} AND {observed(sel, params)}) "
           f"WHERE c_sel OR s_sel GROUP BY agent_id, t, c_sel, s_sel, {_EDGE_GROUP}")  # fmt: skip
    got = store.query_arrow(sql, params.values)
    packets, ip_bytes = np.zeros(len(times), np.int64), np.zeros(len(times), np.int64)
    if not got.num_rows or not len(times):
        return packets, ip_bytes
    take_c, take_s = _accepted(got, bpf, direction)
    names = np.array(got.column("agent_id").to_pylist(), dtype=object)
    codes, inverse = np.unique(np.concatenate([agents.astype(object), names]), return_inverse=True)
    span = int(max(times.max(), got.column("t").to_numpy().max())) + 1
    row_key = inverse[: len(agents)].astype(np.int64) * span + times.astype(np.int64)
    got_key = inverse[len(agents) :].astype(np.int64) * span + got.column("t").to_numpy().astype(np.int64)
    order = np.argsort(row_key)
    pos = order[np.searchsorted(row_key, got_key, sorter=order)]
    np.add.at(packets, pos, _sum(got, "packets_c2s", "packets_s2c", take_c, take_s))
    np.add.at(ip_bytes, pos, _sum(got, "bytes_c2s", "bytes_s2c", take_c, take_s))
    return packets, ip_bytes

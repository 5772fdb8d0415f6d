"""Policy dry-run: what a capture, storage or distribution policy would have matched over a past window, from
the stored flows (docs/controller.md, "Dry-run").

The VMs come from :mod:`.dry_run_selection`. A flow record matches as the agent's filter would match its
packets: its client or server MAC is a selected VM's (``ether host``; for interfaces without a MAC, the IP:
``host``), or, for a one-way flow whose silent side has no MAC, that side's VM id (tagging) is selected; and it
was observed at a selected VM's port, or at no VM port (mirror sessions, imports). Per agent that observed
them: flows, packets and IP bytes, exact for capture policies. A distribution policy's ``direction`` keeps the
client->server and server->client halves whose sender (``from_vm``) or receiver (``to_vm``) is selected.

Forwarded bytes are estimated as packets x min(average frame size, ``truncate``) (the size of each packet is
not stored), per second from the finest edge rollup holding the window (1 s, else 1 min: a minute's average
understates a peak). Everything is read through the caller's store, so a project-scoped caller sees only
flows of its projects. A policy's own tcpdump filter is run on each flow direction's representative frame
(:mod:`.dry_run_filtered`: exact for address, port, protocol and VLAN filters). The broker's deduplication of
VM-to-VM packets seen on two ports of one host is not modelled (counted twice here).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from cloudtap.capture.bpf import vlan_aware
from cloudtap.server.analyse._sql import Params, flow_time_where, table, time_where
from cloudtap.server.analyse.window import Window
from cloudtap.server.controller.distribution import Destination, DistributionPolicy
from cloudtap.server.controller.dry_run_filtered import filtered_flow_figures, filtered_per_second
from cloudtap.server.controller.dry_run_selection import Selection
from cloudtap.server.controller.dry_run_sql import halves as _halves
from cloudtap.server.controller.dry_run_sql import observed as _observed
from cloudtap.server.controller.dry_run_sql import sides as _sides
from cloudtap.server.controller.policy import Policy

#: edge rollups read for peaks, finest first: (table, seconds, widest span read)
PEAK_TABLES = (("edge_1s", 1, 2 * 86400), ("edge_1m", 60, 93 * 86400), ("edge_1h", 3600, 10**9))
NS = 1_000_000_000


def flow_figures(store: Any, sel: Selection, window: Window, direction: str = "both") -> list[dict[str, Any]]:
    """Per observing agent: flows, packets, IP bytes and frame bytes the selection matches in ``window``."""
    if not sel.vms:
        return []
    params = Params()
    c_sel, s_sel = _sides(sel, params, macs=True)
    inner = (
        f"SELECT agent_id, interface_name, flow_id, "
        f"{_halves(direction, 'c_sel', 's_sel', 'packets_c2s', 'packets_s2c')} AS pk, "
        f"{_halves(direction, 'c_sel', 's_sel', 'bytes_c2s', 'bytes_s2c')} AS ipb, "
        f"{_halves(direction, 'c_sel', 's_sel', 'l2_bytes_c2s', 'l2_bytes_s2c')} AS l2b "
        f"FROM (SELECT *, {c_sel} AS c_sel, {s_sel} AS s_sel FROM {table(store.database, 'flow_log')} "
        f"WHERE {flow_time_where(window.start_ns, window.end_ns, params)} AND {_observed(sel, params)}) "
        "WHERE c_sel OR s_sel"
    )
    sql = (f"SELECT agent_id, toUInt64(uniqExactIf((interface_name, flow_id), pk > 0)) AS flows, "
           f"toUInt64(sum(pk)) AS packets, toUInt64(sum(ipb)) AS bytes, toUInt64(sum(l2b)) AS frame_bytes "
           f"FROM ({inner}) GROUP BY agent_id ORDER BY agent_id")  # fmt: skip
    return [r for r in store.query_arrow(sql, params.values).to_pylist() if r["packets"]]


def peak_table(store: Any, window: Window) -> tuple[str, int] | None:
    """The finest edge rollup whose span covers ``window`` and that holds rows in it (None: none has)."""
    for name, width, span in PEAK_TABLES:
        if window.span_ns > span * NS:
            continue
        params = Params()
        sql = f"SELECT 1 AS x FROM {table(store.database, name)} WHERE {time_where(window.start_ns, window.end_ns, params)} LIMIT 1"
        if store.query_arrow(sql, params.values).num_rows:
            return name, width
    return None


def per_second(store: Any, sel: Selection, window: Window, rollup: str, direction: str = "both") -> pa.Table:
    """Per (agent, interval start) of the agents that observed selected traffic: packets and IP bytes of the
    selection, and of everything the agent observed (``all_packets``, ``all_bytes``: the host's traffic)."""
    params = Params()
    c_sel, s_sel = _sides(sel, params, macs=False)
    chosen = f"({_observed(sel, params)} AND ({c_sel} OR {s_sel}))"
    pk = _halves(direction, c_sel, s_sel, "packets_c2s", "packets_s2c")
    ipb = _halves(direction, c_sel, s_sel, "bytes_c2s", "bytes_s2c")
    src = table(store.database, rollup)
    when = time_where(window.start_ns, window.end_ns, params)
    sql = (f"SELECT agent_id, toInt64(toUnixTimestamp(time)) AS t, toUInt64(sumIf({pk}, {chosen})) AS packets, "
           f"toUInt64(sumIf({ipb}, {chosen})) AS bytes, toUInt64(sum(packets_c2s + packets_s2c)) AS all_packets, "
           f"toUInt64(sum(bytes_c2s + bytes_s2c)) AS all_bytes FROM {src} WHERE {when} AND agent_id IN "
           f"(SELECT DISTINCT agent_id FROM {src} WHERE {when} AND {chosen}) GROUP BY agent_id, t")  # fmt: skip
    return store.query_arrow(sql, params.values)


def forwarded_bytes(
    packets: np.ndarray, ip_bytes: np.ndarray, overhead: np.ndarray, truncate: int
) -> np.ndarray:
    """Bytes of the copies: packets x min(average frame size, ``truncate``) (0: whole frames)."""
    frames: np.ndarray = (ip_bytes + packets * overhead).astype(np.float64)
    if not truncate:
        return frames
    average = np.divide(frames, packets, out=np.zeros(len(frames)), where=packets > 0)
    out: np.ndarray = packets * np.minimum(average, float(truncate))
    return out


def _overheads(agents: np.ndarray, figures: list[dict[str, Any]]) -> np.ndarray:
    """Per row's agent: link-layer bytes per packet (frame - IP bytes), from the flow records (14 when none)."""
    per = {r["agent_id"]: (r["frame_bytes"] - r["bytes"]) / r["packets"] for r in figures if r["packets"]}
    return np.array([max(per.get(a, 14.0), 0.0) for a in agents], dtype=np.float64)


def dry_run(
    store: Any,
    kind: str,
    policy: Policy | DistributionPolicy,
    sel: Selection,
    window: Window,
    destinations: dict[str, Destination] | None = None,
    uplink_limits: dict[str, int] | None = None,
) -> dict[str, Any]:
    """The figures of a dry-run (see the module docstring).

    Args:
        kind: ``capture``, ``storage`` or ``distribution``.
        destinations: the defined destinations (distribution).
        uplink_limits: agent id -> the host fuse's ``max_uplink_bps`` (0: not watched; key ``""``: any other
            agent, e.g. an import's).
    """
    direction = policy.direction if isinstance(policy, DistributionPolicy) else "both"
    bpf = policy.bpf
    if bpf and isinstance(policy, DistributionPolicy):
        bpf = vlan_aware(bpf)  # as the broker matches it: on 802.1Q-tagged frames too
    figures = (
        filtered_flow_figures(store, sel, window, direction, bpf)
        if bpf
        else flow_figures(store, sel, window, direction)
    )
    names = {a.agent_id: a for a in sel.agents.values()}
    rows: dict[str, dict[str, Any]] = {}
    for key in sorted(set(names) | {r["agent_id"] for r in figures}):
        a = names.get(key)
        rows[key] = {"agent_id": key, "agent": a.agent if a else "", "host": a.host if a else "",
                     "vms": a.vms if a else [], "interfaces": a.interfaces if a else [],
                     "flows": 0, "packets": 0, "bytes": 0, "frame_bytes": 0}  # fmt: skip
    for r in figures:
        rows[r["agent_id"]].update({k: int(r[k]) for k in ("flows", "packets", "bytes", "frame_bytes")})
    totals = {k: sum(r[k] for r in rows.values()) for k in ("flows", "packets", "bytes", "frame_bytes")}
    answer: dict[str, Any] = {
        "kind": kind, "policy": policy.name, "window": window.to_json(), "vms": len(sel.vms),
        "agents": list(rows.values()), "totals": totals,
        "bpf_evaluated": bool(bpf),
    }  # fmt: skip
    if kind == "storage" and isinstance(policy, Policy):
        snaplen = policy.action.snaplen or 0
        answer["stored_bytes"] = int(sum(forwarded_bytes(np.array([r["packets"]], np.float64),
                                                         np.array([r["bytes"]], np.float64),
                                                         _overheads(np.array([r["agent_id"]]), figures), snaplen)[0]
                                         for r in rows.values()))  # fmt: skip
    if kind == "capture" and isinstance(policy, Policy) and policy.action.payload_bytes:
        answer.update(_payload_figures(policy, rows, figures))
    if isinstance(policy, DistributionPolicy):
        answer.update(
            _distribution(store, policy, sel, window, figures, rows, destinations or {}, uplink_limits or {})
        )
    return answer


def _payload_figures(
    policy: Policy, rows: dict[str, dict[str, Any]], figures: list[dict[str, Any]]
) -> dict[str, Any]:
    """A capture policy keeping payload: its snap length, whether requests are parsed, and the bytes the
    agents would have kept (packets x min(average frame, snaplen), estimated like truncation)."""
    from cloudtap.capture.policy_filter import payload_snaplen

    snaplen = payload_snaplen(policy.action.payload_bytes)
    kept = sum(float(forwarded_bytes(np.array([r["packets"]], np.float64), np.array([r["bytes"]], np.float64),
                                     _overheads(np.array([r["agent_id"]]), figures), snaplen)[0])
               for r in rows.values())  # fmt: skip
    return {"payload_bytes": policy.action.payload_bytes, "snaplen": snaplen,
            "requests": policy.action.parses_requests, "captured_bytes": int(kept)}  # fmt: skip


def _distribution(store: Any, policy: DistributionPolicy, sel: Selection, window: Window,
                  figures: list[dict[str, Any]], rows: dict[str, dict[str, Any]],
                  destinations: dict[str, Destination], limits: dict[str, int]) -> dict[str, Any]:  # fmt: skip
    """Forwarded bytes, peak bps per agent and destination, caps and fuses."""
    for r in rows.values():
        over = (r["frame_bytes"] - r["bytes"]) / r["packets"] if r["packets"] else 14.0
        fwd = forwarded_bytes(np.array([r["packets"]], np.float64), np.array([r["bytes"]], np.float64),
                              np.array([over]), policy.truncate)  # fmt: skip
        r["forwarded_bytes"] = int(fwd[0])
        r["peak_forwarded_bps"] = 0.0
        r["fuse_limit_bps"] = int(limits.get(r["agent_id"], limits.get("", 0)))
        r["peak_host_bps"] = 0.0
        r["fuse_tripped"] = False
    rollup = peak_table(store, window) if sel.vms else None
    total_peak = 0.0
    seconds_over: dict[str, int] = {}
    if rollup is not None:
        name, width = rollup
        got = per_second(store, sel, window, name, policy.direction)
        agents = np.array(got.column("agent_id").to_pylist(), dtype=object)
        times = got.column("t").to_numpy()
        over = _overheads(agents, figures)
        col = {
            k: got.column(k).to_numpy().astype(np.float64)
            for k in ("packets", "bytes", "all_packets", "all_bytes")
        }
        if policy.bpf:
            accepted = filtered_per_second(
                store, sel, window, name, policy.direction, vlan_aware(policy.bpf), agents, times
            )
            col["packets"], col["bytes"] = (a.astype(np.float64) for a in accepted)
        fwd_bps = 8 * forwarded_bytes(col["packets"], col["bytes"], over, policy.truncate) / width
        host_bps = fwd_bps + 8 * forwarded_bytes(col["all_packets"], col["all_bytes"], over, 0) / width
        if len(times):
            uniq, inverse = np.unique(times, return_inverse=True)
            total_peak = float(np.bincount(inverse, weights=fwd_bps, minlength=len(uniq)).max())
        for agent_id, r in rows.items():
            mine = agents == agent_id
            if not mine.any():
                continue
            r["peak_forwarded_bps"] = float(fwd_bps[mine].max())
            r["peak_host_bps"] = float(host_bps[mine].max())
            limit = r["fuse_limit_bps"]
            r["fuse_tripped"] = bool(limit and (host_bps[mine] > limit).any())
            for dest in policy.destinations:
                cap = destinations[dest].max_bps if dest in destinations else 0
                if cap:
                    seconds_over[dest] = seconds_over.get(dest, 0) + int((fwd_bps[mine] > cap).sum())
    peak_agent = max((r["peak_forwarded_bps"] for r in rows.values()), default=0.0)
    dests = []
    for dest in policy.destinations:
        d = destinations.get(dest)
        cap = d.max_bps if d else 0
        dests.append({"destination": dest, "defined": d is not None, "max_bps": cap,
                      "forwarded_bytes": sum(r["forwarded_bytes"] for r in rows.values()),
                      "peak_bps": peak_agent, "peak_total_bps": total_peak,
                      "cap_tripped": bool(cap and peak_agent > cap), "intervals_over_cap": seconds_over.get(dest, 0)})  # fmt: skip
    return {"rollup": asdict_rollup(rollup), "truncate": policy.truncate, "destinations": dests,
            "fuse_tripped": any(r["fuse_tripped"] for r in rows.values())}  # fmt: skip


def asdict_rollup(rollup: tuple[str, int] | None) -> dict[str, Any] | None:
    """``{"table", "interval_s"}`` of the rollup the peaks came from (None: no edges in the window)."""
    return None if rollup is None else {"table": rollup[0], "interval_s": rollup[1]}


__all__ = ["dry_run", "flow_figures", "forwarded_bytes", "peak_table", "per_second"]

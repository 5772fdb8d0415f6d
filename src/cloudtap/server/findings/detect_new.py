"""``new_edge`` and ``new_port``: edges missing from the learned baseline (``finding_seen_edge``).

The baseline is every client -> server:port/proto edge seen since learning began, with its first and
last minute; edges unseen for ``baseline_days`` drop out (TTL) and are new again. Each cycle reads the
baseline's keys (one row per distinct edge: its cost follows the number of edges, not the days stored),
compares the minute's edges with them as 64-bit hashes (numpy ``isin``), then adds the minute's edges
with one ``INSERT ... SELECT``. An edge whose every handshake failed is not "talking" (that is a scan
or a failure, reported by those kinds) and is not reported here. Nothing is reported during the first
``learn_minutes`` after learning began.
"""

from __future__ import annotations

import numpy as np

from cloudtap.server.findings.context import Cycle, edge_args
from cloudtap.server.findings.edges import KEY_SQL, PAIR_SQL
from cloudtap.server.findings.model import Detection, Severity
from cloudtap.server.findings.store import iso_s
from cloudtap.server.store.ddl import ident

#: Most new edges (and new ports) reported per minute, biggest first; the rest are counted in the summary.
MAX_PER_MINUTE = 20
#: Protocols whose server port names a service (TCP, UDP, SCTP); for the others only the IP pair counts.
PORT_PROTOCOLS = np.array([6, 17, 132])


def seen_keys(cycle: Cycle) -> tuple[np.ndarray, np.ndarray]:
    """(edge hashes, IP-pair hashes) of the baseline as of the cycle's start."""
    db = ident(cycle.store.database)
    table = cycle.store.query_arrow(
        f"SELECT {KEY_SQL} AS key, {PAIR_SQL} AS pair FROM {db}.finding_seen_edge "
        f"GROUP BY client_ip, server_ip, server_port, proto HAVING min(first_seen) < toDateTime({{t0:Int64}}, 'UTC')",
        {"t0": cycle.t0},
    )
    return table["key"].to_numpy(), table["pair"].to_numpy()


def refresh_seen(cycle: Cycle) -> None:
    """Add the cycle's edges to the baseline (server side: nothing crosses into Python)."""
    db = ident(cycle.store.database)
    cycle.store.command(
        f"INSERT INTO {db}.finding_seen_edge SELECT client_ip, server_ip, server_port, proto, min(time), max(time), "
        f"max(client_project_id), max(server_project_id), now() FROM {db}.edge_1m "
        f"WHERE time >= toDateTime({{t0:Int64}}, 'UTC') AND time < toDateTime({{t1:Int64}}, 'UTC') "
        f"GROUP BY client_ip, server_ip, server_port, proto",
        {"t0": cycle.t0, "t1": cycle.t1},
    )


def detect_new(cycle: Cycle) -> list[Detection]:
    """New edges and new ports of the cycle's minute (after the learning period)."""
    cfg, e = cycle.config, cycle.edges
    learning_ends = (
        cycle.baseline_start if cycle.baseline_start is not None else cycle.t0
    ) + cfg.learn_minutes * 60
    if not len(e) or cycle.t0 < learning_ends:
        return []
    keys, pairs = seen_keys(cycle)
    talking = ~((e["failed"] >= e["opened"]) & (e["opened"] > 0))
    new = talking & ~np.isin(e["key"], keys)
    known_pair = np.isin(e["pair"], pairs)
    ports_matter = np.isin(e["proto"], PORT_PROTOCOLS)  # an ICMP "port" is an echo id: pairs only
    out: list[Detection] = []
    for kind, mask in (("new_edge", new & ~known_pair), ("new_port", new & known_pair & ports_matter)):
        idx = np.flatnonzero(mask)
        if not len(idx):
            continue
        idx = idx[np.argsort(-e.bytes[idx], kind="stable")]
        shown, rest = idx[:MAX_PER_MINUTE], len(idx) - MAX_PER_MINUTE
        subjects = cycle.subjects([e.row(int(i)) for i in shown])
        for rank, (i, s) in enumerate(zip(shown, subjects, strict=True)):
            size = float(e.bytes[i])
            severity: Severity = "warning" if size >= cfg.new_edge_warn_bytes else "info"
            what = "new edge" if kind == "new_edge" else "new port on a known pair"
            more = f" (+{rest} more new this minute)" if rank == 0 and rest > 0 else ""
            out.append(Detection(
                kind=kind, severity=severity, subject=s, time_from=cycle.t0, time_to=cycle.t1,
                summary=f"{what}: {s.label}, {size / 1e6:.3g} MB in its first minute{more}",
                figures={"bytes": size, "bytes_c2s": float(e["c2s"][i]), "bytes_s2c": float(e["s2c"][i]),
                         "flows": float(e["opened"][i]), "rank_by_bytes": rank + 1, "new_this_minute": int(len(idx))},
                baseline={"learned_since": iso_s(learning_ends - cfg.learn_minutes * 60),
                          "edges_known": int(len(keys)), "forget_after_days": cfg.baseline_days},
                reproduce=f"cloudtap drill {cycle.window_args()} {edge_args(s)}",
            ))  # fmt: skip
    return out

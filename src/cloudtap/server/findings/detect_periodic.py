"""``periodic_transfer``: a recurring bulk one-way push (the seed's hourly backup), its period and next time.

Candidates are the minute's one-way pushes (drill's rule: the bigger direction at least ``push_ratio``
times the smaller + 1 byte, and at least ``push_min_bytes``). Each is backtested over the last
``periodic_lookback_h`` hours (:func:`~cloudtap.server.analyse.backtest.backtest`: minutes above
``push_min_bytes`` on that edge, occurrences, then :func:`~cloudtap.server.analyse.periodicity.find_period`);
it is reported once at least ``periodic_min_cycles`` whole periods were seen with ``periodic_regularity``.
The finding is extended by each occurrence (merge gap: 1.5 periods), so a schedule is one finding.
"""

from __future__ import annotations

import numpy as np

from cloudtap.server.analyse.backtest import backtest
from cloudtap.server.analyse.signature import Signature
from cloudtap.server.findings.context import Cycle, peer_args
from cloudtap.server.findings.model import Detection
from cloudtap.server.findings.store import iso_s

MAX_CANDIDATES = 10
NS = 1_000_000_000


def detect_periodic(cycle: Cycle) -> list[Detection]:
    """Periodic pushes among the minute's one-way transfers."""
    cfg, e = cycle.config, cycle.edges
    if not len(e):
        return []
    big, small = np.maximum(e["c2s"], e["s2c"]), np.minimum(e["c2s"], e["s2c"])
    push = (big >= cfg.push_min_bytes) & (big >= cfg.push_ratio * (small + 1))
    idx = np.flatnonzero(push)
    idx = idx[np.argsort(-big[idx], kind="stable")][:MAX_CANDIDATES]
    out = []
    lookback0 = cycle.t1 - int(cfg.periodic_lookback_h * 3600)
    for i, s in zip(idx, cycle.subjects([e.row(int(i)) for i in idx]), strict=True):
        sig = Signature.model_validate({
            "filter": {"client_ip": s.client_ip, "server_ip": s.server_ip, "port": s.server_port, "proto": s.proto},
            "condition": {"metric": "bytes", "threshold": cfg.push_min_bytes}, "step": "1m", "max_gap": 1,
        })  # fmt: skip
        result = backtest(cycle.store, sig, lookback0 * NS, cycle.t1 * NS, names=cycle.names)
        period = result.period
        if (
            period is None
            or period.cycles < cfg.periodic_min_cycles
            or period.regularity < cfg.periodic_regularity
        ):
            continue
        occ = result.occurrences
        direction = "c2s" if e["c2s"][i] >= e["s2c"][i] else "s2c"
        pusher = s.client_vm or s.client_ip if direction == "c2s" else s.server_vm or s.server_ip
        first_s = int(np.datetime64(occ[0].start.replace("Z", "")).astype("datetime64[s]").astype(np.int64))
        out.append(Detection(
            kind="periodic_transfer", severity="info", subject=s, time_from=first_s, time_to=cycle.t1,
            summary=f"periodic push on {s.label} ({pusher} sends): {period.text}, {len(occ)} times in "
                    f"{cfg.periodic_lookback_h:g} h, next expected {period.next_expected}",
            figures={"period_s": period.period_s, "spread_s": period.spread_s, "regularity": period.regularity,
                     "next_expected": period.next_expected, "occurrences": len(occ), "direction": direction,
                     "last_start": occ[-1].start, "last_bytes": occ[-1].total, "period_text": period.text},
            baseline={"lookback_from": iso_s(lookback0), "push_min_bytes": cfg.push_min_bytes,
                      "push_ratio": cfg.push_ratio},
            reproduce=f"cloudtap backtest --from {iso_s(lookback0)} --to {iso_s(cycle.t1)} {peer_args(s)} "
                      f"--when 'bytes>{cfg.push_min_bytes:g}'",
            merge_gap_s=1.5 * period.period_s,
        ))  # fmt: skip
    return out

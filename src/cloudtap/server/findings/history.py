"""Each current edge's recent minutes as a dense matrix, and robust statistics per row (vectorised).

The history is the ``burst_history_minutes`` before the cycle, read from ``edge_1m`` for every edge at
once (one ``GROUP BY key, minute``), placed into an ``edges x minutes`` zero-filled matrix: a fixed
window, so the cost does not grow with the stored days.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cloudtap.server.analyse.robust import MAD_SCALE, MEAN_AD_SCALE
from cloudtap.server.findings.edges import KEY_SQL, Edges
from cloudtap.server.store.ddl import ident


def history(
    store: Any, edges: Edges, t0: int, minutes: int, wanted: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """``{"bytes", "retrans", "failed"}`` -> ``len(edges) x minutes`` matrices of ``[t0 - minutes*60, t0)``.

    Only the rows where ``wanted`` is true are read (the others stay zero): the detectors need a baseline
    only for edges already past their absolute thresholds. With one observing agent per edge in the
    minute, the per-agent level is skipped (a second agent seen only earlier would be summed in:
    a higher baseline, so fewer findings, never more).
    """
    n = len(edges)
    out = {m: np.zeros((n, minutes)) for m in ("bytes", "retrans", "failed")}
    wanted = np.ones(n, bool) if wanted is None else wanted
    if not n or not wanted.any():
        return out
    h0 = t0 - minutes * 60
    keys_wanted = edges["key"][wanted]
    where = (
        f"FROM {ident(store.database)}.edge_1m "
        f"WHERE time >= toDateTime({{h0:Int64}}, 'UTC') AND time < toDateTime({{t0:Int64}}, 'UTC') "
        f"AND {KEY_SQL} IN {{keys:Array(UInt64)}}"
    )

    def sums(b: str, r: str, f: str) -> str:
        return f"sum(bytes_c2s + bytes_s2c) AS {b}, sum(retrans) AS {r}, sum(flows_failed) AS {f}"

    minute = "toUnixTimestamp(toStartOfMinute(time)) AS minute"
    if int(edges["agents"].max()) <= 1:
        sql = f"SELECT {KEY_SQL} AS key, {minute}, {sums('bytes', 'retrans', 'failed')} {where} GROUP BY key, minute"
    else:
        sql = (f"SELECT key, minute, max(b) AS bytes, max(r) AS retrans, max(f) AS failed FROM ("
               f"SELECT {KEY_SQL} AS key, {minute}, agent_id, {sums('b', 'r', 'f')} {where} "
               f"GROUP BY key, minute, agent_id) "
               f"GROUP BY key, minute")  # fmt: skip
    table = store.query_arrow(sql, {"h0": h0, "t0": t0, "keys": keys_wanted.tolist()})
    if not table.num_rows:
        return out
    order = np.argsort(edges["key"], kind="stable")
    sorted_keys = edges["key"][order]
    keys = table["key"].to_numpy()
    pos = np.minimum(np.searchsorted(sorted_keys, keys), n - 1)
    hit = sorted_keys[pos] == keys
    rows = order[pos[hit]]
    cols = ((table["minute"].to_numpy()[hit].astype(np.int64) - h0) // 60).clip(0, minutes - 1)
    for m in out:
        np.add.at(out[m], (rows, cols), table[m].to_numpy()[hit].astype(np.float64))
    return out


def robust_rows(matrix: np.ndarray, current: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(median, sigma) per row, as :func:`~cloudtap.server.analyse.robust.robust_center_scale` for each
    row with the row plus its current value as the fallback: 1.4826 MAD, else 1.2533 mean absolute
    deviation, else the same two with the current value included, else 1."""
    med = np.median(matrix, axis=1) if matrix.shape[1] else np.zeros(len(matrix))
    dev = np.abs(matrix - med[:, None])
    scale = np.median(dev, axis=1) * MAD_SCALE if matrix.shape[1] else np.zeros(len(matrix))
    mean_ad = dev.mean(axis=1) * MEAN_AD_SCALE if matrix.shape[1] else np.zeros(len(matrix))
    scale = np.where(scale > 0, scale, mean_ad)
    wide = np.concatenate([matrix, current[:, None]], axis=1)
    wmed = np.median(wide, axis=1)
    wdev = np.abs(wide - wmed[:, None])
    fallback = np.median(wdev, axis=1) * MAD_SCALE
    fallback = np.where(fallback > 0, fallback, wdev.mean(axis=1) * MEAN_AD_SCALE)
    scale = np.where(scale > 0, scale, fallback)
    return med, np.where(scale > 0, scale, 1.0)

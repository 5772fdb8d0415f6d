"""Robust statistics on bucket series: median / MAD scale, robust z-scores, runs of flagged buckets.

Everything is vectorised numpy over one series (one value per time bucket, zeros included).
"""

from __future__ import annotations

import numpy as np

#: MAD -> standard deviation of a normal distribution.
MAD_SCALE = 1.4826
#: Mean absolute deviation -> standard deviation (used when the MAD is 0, e.g. mostly-zero series).
MEAN_AD_SCALE = 1.2533


def robust_center_scale(values: np.ndarray, fallback: np.ndarray | None = None) -> tuple[float, float]:
    """(median, robust sigma) of ``values``.

    Sigma is ``1.4826 * MAD``; when that is 0 (more than half the buckets equal, typically idle ones)
    ``1.2533 * mean |x - median|``; then the same two on ``fallback``; finally 1.

    Args:
        values: the reference distribution (e.g. a baseline's buckets).
        fallback: a wider distribution to take the scale from when ``values`` has none.
    """
    v = np.asarray(values, np.float64)
    med = float(np.median(v)) if v.size else 0.0
    for ref in (v, None if fallback is None else np.asarray(fallback, np.float64)):
        if ref is None or not ref.size:
            continue
        center = float(np.median(ref))
        dev = np.abs(ref - center)
        mad = float(np.median(dev)) * MAD_SCALE
        if mad > 0:
            return med, mad
        mean_ad = float(dev.mean()) * MEAN_AD_SCALE
        if mean_ad > 0:
            return med, mean_ad
    return med, 1.0


def robust_z(values: np.ndarray, center: float, scale: float) -> np.ndarray:
    """``(x - center) / scale`` per value."""
    return (np.asarray(values, np.float64) - center) / (scale if scale > 0 else 1.0)


def runs(flags: np.ndarray, max_gap: int = 0) -> np.ndarray:
    """Runs of True in ``flags`` as ``[[first, last], ...]`` indices (inclusive).

    Args:
        flags: one bool per bucket, in time order.
        max_gap: runs separated by at most this many False buckets are merged.
    """
    f = np.asarray(flags, bool)
    if not f.any():
        return np.zeros((0, 2), np.int64)
    idx = np.flatnonzero(f)
    breaks = np.flatnonzero(np.diff(idx) > max_gap + 1)
    starts = np.concatenate(([idx[0]], idx[breaks + 1]))
    ends = np.concatenate((idx[breaks], [idx[-1]]))
    return np.stack([starts, ends], axis=1).astype(np.int64)


def dense_series(bucket_s: np.ndarray, values: np.ndarray, start_s: int, n: int, step_s: int) -> np.ndarray:
    """Values of sparse buckets (epoch seconds) placed in a zero-filled series of ``n`` buckets from ``start_s``."""
    out = np.zeros(n, np.float64)
    if len(bucket_s):
        idx = (np.asarray(bucket_s, np.int64) - start_s) // step_s
        ok = (idx >= 0) & (idx < n)
        np.add.at(out, idx[ok], np.asarray(values, np.float64)[ok])
    return out

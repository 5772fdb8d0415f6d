"""TokenBucket: a destination's cap on the bits/s of copies it is sent, applied per batch (vectorised).

Tokens are bytes. The bucket refills at ``max_bps / 8`` bytes per second up to ``burst_bytes``. A batch's
copies are admitted in order while their cumulative size fits the tokens (one ``cumsum`` and one
``searchsorted``, no loop per packet); the rest of the batch is refused (counted by the caller as
``drops_cap``). The cap therefore holds over any interval: what passes in ``t`` seconds is at most
``burst_bytes + max_bps / 8 * t`` bytes.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


class TokenBucket:
    """Admits a prefix of each batch of copies (sizes in bytes on the underlay)."""

    def __init__(self, max_bps: int, burst_bytes: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = max(0, int(max_bps)) / 8.0  #: bytes per second (0: no cap)
        self.burst = float(max(1, int(burst_bytes)))
        self.tokens = self.burst
        self._clock = clock
        self._last = clock()

    @property
    def unlimited(self) -> bool:
        """True when no cap applies."""
        return self.rate <= 0

    def admit(self, sizes: np.ndarray) -> int:
        """How many leading copies of ``sizes`` may go now (and take their tokens)."""
        n = int(sizes.shape[0])
        if n == 0 or self.unlimited:
            return n
        now = self._clock()
        self.tokens = min(self.burst, self.tokens + (now - self._last) * self.rate)
        self._last = now
        total = np.cumsum(sizes, dtype=np.int64)
        k = int(np.searchsorted(total, self.tokens, side="right"))
        if k:
            self.tokens -= float(total[k - 1])
        return k

    def reconfigure(self, max_bps: int, burst_bytes: int) -> None:
        """New rate and depth, keeping the tokens (capped by the new depth)."""
        self.rate = max(0, int(max_bps)) / 8.0
        self.burst = float(max(1, int(burst_bytes)))
        self.tokens = min(self.tokens, self.burst)

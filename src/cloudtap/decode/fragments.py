"""FragmentTracker: give later IP fragments the ports of their first fragment, across batches."""

from __future__ import annotations

import numpy as np

from cloudtap.decode._fragment_kernels import (
    N_STATS,
    STAT_ASSOCIATED,
    STAT_EVICTED,
    STAT_ORPHANS,
    TABLE_DTYPE,
    associate_kernel,
)
from cloudtap.errors import ConfigError
from cloudtap.schema.packet import FLAG_FRAGMENT, PACKET_DTYPE


class FragmentTracker:
    """Bounded table of first fragments keyed by (src, dst, proto, frag_id).

    Later fragments (``FLAG_LATER_FRAGMENT``) whose first fragment was seen within
    ``timeout_ns`` get its ``sport``/``dport``; the others keep ports 0 and get
    ``FLAG_ORPHAN_FRAGMENT``. A first fragment arriving after its later fragments (across
    batches) cannot fix them retroactively. When a probe window is full the oldest entry is
    replaced (``evicted`` counts replaced entries that were neither complete nor expired).

    Args:
        capacity: table slots, rounded up to a power of two (56 bytes per slot).
        timeout_ns: an entry older than this (packet time) no longer matches.
    """

    def __init__(self, capacity: int = 65536, timeout_ns: int = 30_000_000_000) -> None:
        if capacity < 1:
            raise ConfigError(f"FragmentTracker capacity must be positive, got {capacity}")
        if timeout_ns <= 0:
            raise ConfigError(f"FragmentTracker timeout_ns must be positive, got {timeout_ns}")
        size = 1 << max(4, (int(capacity) - 1).bit_length())
        self._table = np.zeros(size, dtype=TABLE_DTYPE)
        self._stats = np.zeros(N_STATS, dtype=np.int64)
        self.timeout_ns = int(timeout_ns)

    @property
    def capacity(self) -> int:
        """Number of slots in the table."""
        return int(self._table.shape[0])

    @property
    def orphans(self) -> int:
        """Later fragments whose first fragment was not (or no longer) in the table."""
        return int(self._stats[STAT_ORPHANS])

    @property
    def evicted(self) -> int:
        """Live entries replaced because their probe window was full."""
        return int(self._stats[STAT_EVICTED])

    @property
    def associated(self) -> int:
        """Later fragments that received their first fragment's ports."""
        return int(self._stats[STAT_ASSOCIATED])

    def associate(self, packets: np.ndarray) -> None:
        """Update ``packets`` (``PACKET_DTYPE``, in time order) in place.

        Args:
            packets: decoded rows; only IP fragments with status ok/truncated are touched.
        """
        if not isinstance(packets, np.ndarray) or packets.dtype != PACKET_DTYPE or packets.ndim != 1:
            raise ValueError("packets must be a 1-D PACKET_DTYPE array")
        if not packets.flags.writeable:
            raise ValueError("packets must be writeable (association updates it in place)")
        if not (packets["flags"] & FLAG_FRAGMENT).any():
            return  # the kernel touches fragments only (most captures have none: it is never even loaded)
        associate_kernel(packets, self._table, self.timeout_ns, self._stats)

    def clear(self) -> None:
        """Forget every entry and reset the counters."""
        self._table[:] = np.zeros(1, dtype=TABLE_DTYPE)
        self._stats[:] = 0

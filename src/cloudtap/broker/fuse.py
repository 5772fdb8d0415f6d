"""HostFuse: stop forwarding while the host's uplinks or CPU are busier than allowed.

Evaluated at most once a second (:meth:`HostFuse.check`): the uplinks' rx+tx bits/s (from
``/sys/class/net/<if>/statistics``) and the host CPU busy percent (from ``/proc/stat``) over the last
interval. The fuse opens (forwarding stops, copies counted as ``drops_fuse``) when either is above its
threshold, and closes again only when every watched value is below ``threshold * resume_ratio``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cloudtap.broker.config import FuseSection

SYS_NET = Path("/sys/class/net")
PROC_STAT = Path("/proc/stat")


@dataclass(frozen=True)
class HostSample:
    """Cumulative host counters at one moment."""

    uplink_bytes: int  #: rx + tx bytes of the watched uplinks
    cpu_busy: int  #: jiffies not idle/iowait
    cpu_total: int  #: all jiffies


def read_host(uplinks: list[str]) -> HostSample:
    """Read the counters (an uplink that vanished counts 0)."""
    total = 0
    for name in uplinks:
        for kind in ("rx_bytes", "tx_bytes"):
            try:
                total += int((SYS_NET / name / "statistics" / kind).read_text())
            except (OSError, ValueError):
                pass
    busy = all_ = 0
    try:
        with PROC_STAT.open() as fh:
            fields = [int(x) for x in fh.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        all_ = sum(fields[:8])
        busy = all_ - idle
    except (OSError, ValueError, IndexError):
        pass
    return HostSample(total, busy, all_)


class HostFuse:
    """Open/closed state with hysteresis; ``reader`` is injectable for tests."""

    def __init__(
        self,
        section: FuseSection,
        reader: Callable[[list[str]], HostSample] = read_host,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.section = section
        self._reader = reader
        self._clock = clock
        self.open = False  #: True: forwarding stopped
        self.reason = ""
        self.trips = 0
        self.uplink_bps = 0.0
        self.cpu_percent = 0.0
        self._last_t = clock()
        self._last = reader(list(section.uplink_interfaces)) if self.watching else None

    @property
    def watching(self) -> bool:
        """True when some threshold is set."""
        return self.section.max_uplink_bps > 0 or self.section.max_cpu_percent > 0

    def configure(self, section: FuseSection) -> None:
        """New thresholds (the state is kept; a fuse no longer watching closes)."""
        uplinks_changed = section.uplink_interfaces != self.section.uplink_interfaces
        self.section = section
        if not self.watching:
            self.open, self.reason = False, ""
            self._last = None
        elif uplinks_changed or self._last is None:
            self._last_t = self._clock()
            self._last = self._reader(list(section.uplink_interfaces))

    def check(self) -> bool:
        """Re-evaluate when a second has passed since the last evaluation; returns :attr:`open`."""
        if not self.watching:
            return False
        now = self._clock()
        dt = now - self._last_t
        if dt < 1.0:
            return self.open
        sample = self._reader(list(self.section.uplink_interfaces))
        last = self._last or sample
        self._last, self._last_t = sample, now
        self.uplink_bps = max(0, sample.uplink_bytes - last.uplink_bytes) * 8 / dt
        jiffies = sample.cpu_total - last.cpu_total
        self.cpu_percent = 100.0 * (sample.cpu_busy - last.cpu_busy) / jiffies if jiffies > 0 else 0.0
        s = self.section
        over = []
        if s.max_uplink_bps > 0 and self.uplink_bps > s.max_uplink_bps:
            over.append(f"uplink {self.uplink_bps / 1e6:.1f} Mbit/s > {s.max_uplink_bps / 1e6:.1f}")
        if s.max_cpu_percent > 0 and self.cpu_percent > s.max_cpu_percent:
            over.append(f"cpu {self.cpu_percent:.0f}% > {s.max_cpu_percent:.0f}%")
        if not self.open and over:
            self.open, self.reason = True, "; ".join(over)
            self.trips += 1
        elif self.open:
            calm = (s.max_uplink_bps <= 0 or self.uplink_bps < s.max_uplink_bps * s.resume_ratio) and (
                s.max_cpu_percent <= 0 or self.cpu_percent < s.max_cpu_percent * s.resume_ratio
            )
            if calm:
                self.open, self.reason = False, ""
            elif over:
                self.reason = "; ".join(over)
        return self.open

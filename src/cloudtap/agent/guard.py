"""Keep the agent inside the resources the user grants, and out of a host's way when it struggles.

- :class:`PpsLimiter` caps packets per second of wall time (token bucket).
- :class:`CpuGovernor` sleeps the capture loop so the process stays within ``max_cpu_cores``.
- :class:`Breaker` / :class:`HostBreakers` pause capture when load, free memory or free disk cross
  their thresholds, with hysteresis and a minimum hold time.
- :class:`RssWatch` compares the process's resident memory (ring pages included) with the grant.

How the memory grant is split up front is :mod:`cloudtap.agent.budget`. The kernel-enforced
counterpart (cgroup ``cpu.max`` / ``memory.max``) is in :mod:`cloudtap.agent.cgroup`; these guards
work with or without it.
"""

from __future__ import annotations

import math
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cloudtap.agent.budget import MIB
from cloudtap.agent.config import BreakersSection
from cloudtap.errors import ConfigError


# -- packets per second ----------------------------------------------------------------------------
class PpsLimiter:
    """Token bucket on packets per second of wall time, shared by all capture workers.

    The bucket holds at most ``max_pps * burst_s`` packets (at least 1) and starts full. Integer
    arithmetic in packet-nanoseconds keeps it exact: over any interval the admitted count is at most
    ``burst + max_pps * elapsed``.
    """

    def __init__(self, max_pps: int, burst_s: float = 0.1) -> None:
        if max_pps < 0 or burst_s <= 0:
            raise ConfigError(f"PpsLimiter: max_pps must be >= 0 and burst_s > 0 (got {max_pps}, {burst_s})")
        self.max_pps = int(max_pps)
        self._cap = max(1, math.floor(max_pps * burst_s)) * 1_000_000_000  # packet-ns
        self._credit = self._cap
        self._last_ns: int | None = None
        self._lock = threading.Lock()
        self.admitted = 0
        self.dropped = 0

    def admit(self, n: int, now: float | None = None) -> int:
        """How many of ``n`` packets may pass now (0..n); the caller drops and counts the rest.

        Args:
            n: packets in the batch.
            now: wall/monotonic time in seconds (default ``time.monotonic()``).
        """
        if n <= 0:
            return 0
        if self.max_pps == 0:
            self.admitted += n
            return n
        now_ns = time.monotonic_ns() if now is None else round(now * 1e9)
        with self._lock:
            if self._last_ns is not None and now_ns > self._last_ns:
                self._credit = min(self._cap, self._credit + (now_ns - self._last_ns) * self.max_pps)
            if self._last_ns is None or now_ns > self._last_ns:
                self._last_ns = now_ns
            allowed = min(n, self._credit // 1_000_000_000)
            self._credit -= allowed * 1_000_000_000
            self.admitted += allowed
            self.dropped += n - allowed
        return allowed


# -- CPU -------------------------------------------------------------------------------------------
class CpuGovernor:
    """Sleeps the capture loop(s) so the process's CPU time stays within ``max_cpu_cores``.

    Accounting is process-wide (``time.process_time``: all threads), so one governor serves every
    worker. Over a window of ``window_s`` the CPU used may not exceed ``max_cpu_cores * wall``; a
    caller that is ahead sleeps the difference. Debt carries into the next window, unused credit
    does not (no bursts after idle periods longer than a window).
    """

    def __init__(
        self,
        max_cpu_cores: float,
        window_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        cpu_clock: Callable[[], float] = time.process_time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_cpu_cores <= 0 or window_s <= 0:
            raise ConfigError(
                f"CpuGovernor: max_cpu_cores and window_s must be > 0 ({max_cpu_cores}, {window_s})"
            )
        self.max_cpu_cores = float(max_cpu_cores)
        self.window_s = float(window_s)
        self._clock, self._cpu, self._sleep = clock, cpu_clock, sleep
        self._lock = threading.Lock()
        self._wall0, self._cpu0 = clock(), cpu_clock()
        self._last_wall, self._last_cpu = self._wall0, self._cpu0
        self.throttled_s = 0.0
        self.cpu_percent = 0.0  #: CPU of the last completed window (100 = one core)
        self.unlimited = self.max_cpu_cores >= (os.cpu_count() or 1)

    def pace(self) -> float:
        """Sleep just enough to stay within the grant; returns the seconds slept."""
        with self._lock:
            wall, cpu = self._clock(), self._cpu()
            elapsed = wall - self._wall0
            debt = (cpu - self._cpu0) - self.max_cpu_cores * elapsed
            if elapsed >= self.window_s:
                span = wall - self._last_wall
                if span > 0:
                    self.cpu_percent = 100.0 * (cpu - self._last_cpu) / span
                self._last_wall, self._last_cpu = wall, cpu
                self._wall0, self._cpu0 = wall, cpu - max(debt, 0.0)  # carry the debt, drop the credit
        if self.unlimited or debt <= 0:
            return 0.0
        delay = min(debt / self.max_cpu_cores, 2 * self.window_s)
        self._sleep(delay)
        with self._lock:
            self.throttled_s += delay
        return delay


# -- circuit breakers ------------------------------------------------------------------------------
class Breaker:
    """One host condition with hysteresis and a minimum hold time.

    ``kind="max"`` trips when the value rises above ``threshold`` and resets once it is back at or
    below ``threshold * (1 - hysteresis)``; ``kind="min"`` trips below ``threshold`` and resets at or
    above ``threshold * (1 + hysteresis)``. Either way it stays tripped at least ``hold_s``.
    """

    def __init__(
        self,
        name: str,
        threshold: float,
        kind: Literal["max", "min"] = "max",
        hysteresis: float = 0.1,
        hold_s: float = 5.0,
        unit: str = "",
    ) -> None:
        if kind not in ("max", "min"):
            raise ConfigError(f"Breaker {name}: kind must be 'max' or 'min', got {kind!r}")
        self.name = name
        self.threshold = float(threshold)
        self.kind = kind
        self.hysteresis = float(hysteresis)
        self.hold_s = float(hold_s)
        self.unit = unit
        self.tripped = False
        self.reason = ""
        self.trips = 0
        self.value = math.nan
        self._since = 0.0

    @property
    def reset_level(self) -> float:
        """The value the condition must get back to before the breaker resets."""
        h = self.hysteresis
        return self.threshold * (1 - h) if self.kind == "max" else self.threshold * (1 + h)

    def _outside(self, value: float) -> bool:
        return value > self.threshold if self.kind == "max" else value < self.threshold

    def _recovered(self, value: float) -> bool:
        return value <= self.reset_level if self.kind == "max" else value >= self.reset_level

    def update(self, value: float, now: float) -> bool:
        """Feed the current value; returns whether the breaker is tripped."""
        self.value = value
        if math.isnan(value):
            return self.tripped
        if not self.tripped:
            if self._outside(value):
                self.tripped = True
                self.trips += 1
                self._since = now
        elif self._recovered(value) and now - self._since >= self.hold_s:
            self.tripped = False
            self.reason = ""
        if self.tripped:
            rel = ">" if self.kind == "max" else "<"
            self.reason = (
                f"{self.name}: {value:.2f}{self.unit} {rel} {self.threshold:g}{self.unit}"
                if self._outside(value)
                else f"{self.name}: {value:.2f}{self.unit}, waiting for {self.reset_level:g}{self.unit}"
            )
        return self.tripped


@dataclass(frozen=True)
class HostSample:
    """One look at the host."""

    load1: float
    cores: int
    mem_available_mib: float
    disk_free_mib: float


def _mem_available_mib() -> float:
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return math.nan


def _disk_free_mib(path: Path) -> float:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free / MIB
    except OSError:
        return math.nan


def probe_host(disk_path: Path) -> HostSample:
    """Load average, cores, MemAvailable and free disk under ``disk_path`` (or its nearest parent)."""
    try:
        load1 = os.getloadavg()[0]
    except OSError:
        load1 = math.nan
    return HostSample(load1, os.cpu_count() or 1, _mem_available_mib(), _disk_free_mib(disk_path))


class HostBreakers:
    """Load per core, free memory and free disk breakers, checked together."""

    def __init__(
        self, cfg: BreakersSection, disk_path: Path, probe: Callable[[], HostSample] | None = None
    ) -> None:
        self.disk_path = Path(disk_path)
        self._probe = probe or (lambda: probe_host(self.disk_path))
        h, hold = cfg.hysteresis, cfg.hold_s
        self.load = Breaker("load per core", cfg.max_load_per_core, "max", h, hold)
        self.memory = Breaker("free memory", cfg.min_free_memory_mib, "min", h, hold, unit=" MiB")
        self.disk = Breaker(f"free disk {self.disk_path}", cfg.min_free_disk_mib, "min", h, hold, unit=" MiB")
        self.breakers = [self.load, self.memory, self.disk]
        self.sample: HostSample | None = None

    def check(self, now: float | None = None) -> list[str]:
        """Probe the host and update every breaker; returns the reasons tripped ([] = healthy)."""
        now = time.monotonic() if now is None else now
        s = self._probe()
        self.sample = s
        self.load.update(s.load1 / max(s.cores, 1), now)
        self.memory.update(s.mem_available_mib, now)
        self.disk.update(s.disk_free_mib, now)
        return [b.reason for b in self.breakers if b.tripped]


# -- resident memory -------------------------------------------------------------------------------
def read_rss(exclude_file_pages: bool = False) -> int:
    """Resident bytes of this process (``VmRSS``: anonymous + file + shmem pages, ring pages included).

    With ``exclude_file_pages``, file-backed pages (``RssFile``: a replayed capture mapped into memory,
    which is shared, reclaimable page cache) are not counted.
    """
    try:
        rss = file_pages = -1
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith("RssFile:"):
                    file_pages = int(line.split()[1]) * 1024
        if rss >= 0:
            return rss - file_pages if exclude_file_pages and file_pages > 0 else rss
    except OSError:
        pass
    import psutil

    return int(psutil.Process().memory_info().rss)


class RssWatch:
    """The process's resident memory against the memory grant, with hysteresis.

    Counted: anonymous + shmem pages (``VmRSS - RssFile``), i.e. what the agent itself allocates (heap,
    numpy/Arrow buffers, flow table, rings). Not counted: clean file-backed pages (shared libraries, a
    replayed capture): they are shared and reclaimable, and how many of them RSS shows depends on the
    page cache, not on the agent: the same warm agent measured 217 MiB RSS right after a fresh
    ``pip install`` (library files fully cached, fault-around maps whole runs of pages) and 131 MiB
    after ``drop_caches``. PSS is no better (it moves when other processes map the same libraries).

    Over budget when that exceeds the grant; back under only below ``(1 - hysteresis)`` of it, so a
    pause that frees the rings does not flap.
    """

    def __init__(
        self, max_memory_mib: int, hysteresis: float = 0.05, exclude_file_pages: bool = True
    ) -> None:
        self.limit_bytes = int(max_memory_mib) * MIB
        self.exclude_file_pages = exclude_file_pages
        self.hysteresis = hysteresis
        self.over = False
        self.peak_bytes = 0

    def check(self) -> tuple[int, bool]:
        """Returns (RSS bytes, over budget)."""
        rss = read_rss(self.exclude_file_pages)
        self.peak_bytes = max(self.peak_bytes, rss)
        if rss > self.limit_bytes:
            self.over = True
        elif rss <= self.limit_bytes * (1 - self.hysteresis):
            self.over = False
        return rss, self.over

"""Resource guards: pps limiter, CPU governor, breakers, RSS watch (the memory budget: test_budget.py)."""

from __future__ import annotations

import mmap
import os
import threading
import time
from pathlib import Path

import pytest

from cloudtap.agent import guard
from cloudtap.agent.budget import MIB
from cloudtap.agent.config import BreakersSection
from cloudtap.agent.guard import (
    Breaker,
    CpuGovernor,
    HostBreakers,
    HostSample,
    PpsLimiter,
    RssWatch,
)
from cloudtap.errors import ConfigError


# -- PpsLimiter --------------------------------------------------------------------------------------
def test_pps_limiter_is_exact_with_an_injected_clock() -> None:
    lim = PpsLimiter(1000, burst_s=0.1)  # bucket of 100 packets, starts full
    assert lim.admit(500, now=0.0) == 100
    assert lim.admit(10, now=0.0) == 0
    assert lim.admit(100, now=0.05) == 50
    assert lim.admit(1000, now=10.0) == 100  # long idle: capped at the burst
    total = sum(lim.admit(5, now=10.0 + k / 1000) for k in range(1, 1001))  # 5000 pps offered for 1 s
    assert total == 1000
    assert lim.admit(3, now=11.0005) == 0 and lim.admit(3, now=11.001) == 1  # fractions carry over
    assert lim.admit(7, now=10.5) == 0  # a clock going back adds nothing
    assert lim.admitted == 100 + 50 + 100 + 1000 + 1
    assert lim.dropped == (500 + 10 + 100 + 1000 + 5000 + 3 + 3 + 7) - lim.admitted
    assert lim.admit(0, now=12.0) == 0


def test_pps_limiter_counts_and_unlimited() -> None:
    lim = PpsLimiter(200, burst_s=0.5)
    assert lim.admit(150, now=1.0) == 100
    assert (lim.admitted, lim.dropped) == (100, 50)
    free = PpsLimiter(0)
    assert all(free.admit(n) == n for n in (1, 10**6, 3))
    with pytest.raises(ConfigError):
        PpsLimiter(-1)


def test_pps_limiter_shared_by_threads_admits_the_rate() -> None:
    lim = PpsLimiter(2000, burst_s=0.01)  # 20 burst
    admitted = [0, 0]

    def run(i: int) -> None:
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            admitted[i] += lim.admit(50)
            time.sleep(0.001)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    assert sum(admitted) <= 20 + 2000 * elapsed + 1
    assert sum(admitted) >= 0.8 * 2000 * 0.5


# -- CpuGovernor -------------------------------------------------------------------------------------
def test_cpu_governor_with_injected_clocks() -> None:
    clock = {"wall": 0.0, "cpu": 0.0}

    def sleep(d: float) -> None:
        clock["wall"] += d

    gov = CpuGovernor(
        0.25, window_s=0.5, clock=lambda: clock["wall"], cpu_clock=lambda: clock["cpu"], sleep=sleep
    )
    gov.unlimited = False  # the host's core count must not matter here
    for _ in range(2000):  # a busy loop: 2 ms of CPU per batch
        clock["wall"] += 0.002
        clock["cpu"] += 0.002
        gov.pace()
    assert clock["cpu"] / clock["wall"] == pytest.approx(0.25, rel=0.02)
    assert gov.throttled_s == pytest.approx(clock["wall"] - clock["cpu"], rel=0.02)
    assert gov.cpu_percent == pytest.approx(25.0, rel=0.1)


def test_cpu_governor_keeps_a_busy_loop_near_half_a_core() -> None:
    gov = CpuGovernor(0.5, window_s=0.5)
    gov.unlimited = False
    wall0, cpu0 = time.monotonic(), time.process_time()
    while time.monotonic() - wall0 < 3.0:
        end = time.process_time() + 0.002
        while time.process_time() < end:
            pass
        gov.pace()
    wall, cpu = time.monotonic() - wall0, time.process_time() - cpu0
    assert cpu / wall <= 0.5 * 1.15, f"{cpu:.2f} s CPU in {wall:.2f} s"  # the cap holds, always
    assert gov.cpu_percent <= 65
    if os.getloadavg()[0] < (os.cpu_count() or 1) - 0.5:  # a core was free: the loop got its half
        assert cpu / wall == pytest.approx(0.5, rel=0.15), f"{cpu:.2f} s CPU in {wall:.2f} s"
        assert gov.throttled_s == pytest.approx(wall - cpu, rel=0.15)
        assert gov.cpu_percent >= 35


# -- Breaker / HostBreakers --------------------------------------------------------------------------
def test_breaker_max_hysteresis_and_hold() -> None:
    b = Breaker("load per core", 4.0, "max", hysteresis=0.1, hold_s=5.0)
    assert b.update(3.0, now=0.0) is False and b.reason == ""
    assert b.update(5.0, now=1.0) is True and b.trips == 1
    assert "5.00 > 4" in b.reason
    assert b.update(3.8, now=7.0) is True  # back under 4 but inside the band (> 3.6)
    assert "waiting for 3.6" in b.reason
    assert b.update(3.0, now=4.0) is True  # out of the band but the hold (5 s from the trip) is not over
    assert b.update(3.6, now=6.0) is False and b.reason == ""
    assert b.update(4.0, now=6.5) is False  # at the threshold: not above it
    assert b.update(4.1, now=7.0) is True and b.trips == 2


def test_breaker_min_kind() -> None:
    b = Breaker("free memory", 256, "min", hysteresis=0.1, hold_s=0.0, unit=" MiB")
    assert b.update(300, 0.0) is False
    assert b.update(200, 1.0) is True and "200.00 MiB < 256 MiB" in b.reason
    assert b.update(270, 2.0) is True  # reset only at 281.6
    assert b.update(282, 2.0) is False
    off = Breaker("disabled", 0, "min")
    assert off.update(0.0, 0.0) is False


def test_host_breakers_with_injected_probe() -> None:
    samples = iter(
        [
            HostSample(load1=1.0, cores=2, mem_available_mib=4000, disk_free_mib=9000),
            HostSample(load1=10.0, cores=2, mem_available_mib=500, disk_free_mib=9000),
            HostSample(load1=1.0, cores=2, mem_available_mib=4000, disk_free_mib=100),
            HostSample(load1=1.0, cores=2, mem_available_mib=4000, disk_free_mib=9000),
        ]
    )
    cfg = BreakersSection(max_load_per_core=2.0, min_free_memory_mib=1000, min_free_disk_mib=1000, hold_s=1.0)
    hb = HostBreakers(cfg, Path("/data"), probe=lambda: next(samples))
    assert hb.sample is None
    assert hb.check(now=0.0) == []
    reasons = hb.check(now=1.0)
    assert len(reasons) == 2 and reasons[0].startswith("load per core: 5.00")
    assert reasons[1].startswith("free memory: 500.00 MiB")
    assert hb.sample is not None and hb.sample.load1 == 10.0
    reasons = hb.check(now=1.5)  # load and memory healthy but held; the disk trips
    assert [r.split(":")[0] for r in reasons] == ["load per core", "free memory", "free disk /data"]
    assert hb.check(now=3.0) == []
    assert [b.trips for b in hb.breakers] == [1, 1, 1]


def test_host_breakers_on_this_host_are_healthy(tmp_path: Path) -> None:
    hb = HostBreakers(BreakersSection(), tmp_path / "not" / "yet")  # nearest existing parent is used
    assert hb.check() == []
    s = hb.sample
    assert s is not None and s.cores >= 1 and s.load1 >= 0
    assert s.mem_available_mib > 256 and s.disk_free_mib > 512


# -- RssWatch ----------------------------------------------------------------------------------------
def _vm_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_rss_watch_reports_plausible_rss_including_mapped_pages() -> None:
    rss, over = RssWatch(1 << 20).check()
    assert 30 * MIB < rss < 8 << 30 and over is False
    assert rss <= _vm_rss() + 4 * MIB  # anonymous + shmem: part of VmRSS
    assert abs(RssWatch(1 << 20, exclude_file_pages=False).check()[0] - _vm_rss()) < 16 * MIB
    assert RssWatch(64).check()[1] is True  # numpy + numba alone exceed 64 MiB
    with mmap.mmap(-1, 48 * MIB) as ring:  # like a packet ring: pages count once touched
        before = RssWatch(1 << 20).check()[0]
        for off in range(0, 48 * MIB, 4096):
            ring[off] = 1
        after = RssWatch(1 << 20).check()[0]
    assert after - before >= 44 * MIB


def test_rss_watch_hysteresis(monkeypatch: pytest.MonkeyPatch) -> None:
    values = iter([90, 101, 98, 96, 94])
    monkeypatch.setattr(guard, "read_rss", lambda exclude_file_pages=False: next(values) * MIB)
    watch = RssWatch(100)
    assert [watch.check()[1] for _ in range(5)] == [False, True, True, True, False]
    assert watch.peak_bytes == 101 * MIB


def test_rss_can_leave_out_file_pages(tmp_path: Path) -> None:
    """A replayed capture is mapped: its page-cache pages are not the agent's own memory."""
    big = tmp_path / "big.bin"
    big.write_bytes(b"\1" * (32 * MIB))
    with open(big, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        before_all, before_anon = guard.read_rss(), guard.read_rss(exclude_file_pages=True)
        total = sum(mm[i] for i in range(0, len(mm), 4096))
        after_all, after_anon = guard.read_rss(), guard.read_rss(exclude_file_pages=True)
    assert total == 32 * MIB // 4096
    assert after_all - before_all >= 24 * MIB
    assert after_anon - before_anon < 8 * MIB

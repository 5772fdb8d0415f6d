"""Resource guards: memory budget, pps limiter, CPU governor, breakers, RSS watch."""

from __future__ import annotations

import json
import mmap
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from cloudtap.agent import guard
from cloudtap.agent.config import BreakersSection, LimitsSection
from cloudtap.agent.guard import (
    BASELINE_BYTES,
    INITIAL_FLOWS,
    MIB,
    MIN_FLOWS,
    RING_SHARE,
    Breaker,
    CpuGovernor,
    HostBreakers,
    HostSample,
    PpsLimiter,
    RssWatch,
    flow_table_bytes,
    flow_table_peak_bytes,
    frame_bytes,
    initial_flows_for,
    output_buffer_bytes,
    plan_budget,
)
from cloudtap.errors import ConfigError
from cloudtap.meter import Meter, MeterConfig

REPO = Path(__file__).resolve().parents[2]


# -- plan_budget -------------------------------------------------------------------------------------
@pytest.mark.parametrize("cap", [16, 1000, 4096, 5000, 65536, 100_003])
def test_flow_table_bytes_matches_the_meter(cap: int) -> None:
    meter = Meter(MeterConfig(max_flows=cap, initial_flows=cap, output_batch=64))
    assert flow_table_bytes(cap) == meter.memory_bytes - output_buffer_bytes(64)
    if cap == 65536:
        assert 355 <= meter.bytes_per_flow_slot <= 375


def test_budget_fits_the_grant_and_shrinks_with_it() -> None:
    budgets = {m: plan_budget(LimitsSection(max_memory_mib=m)) for m in (380, 512, 1024, 4096)}
    flows = [b.max_flows for b in budgets.values()]
    assert flows == sorted(flows) and len(set(flows)) == 4
    for mib, b in budgets.items():
        assert b.planned_bytes <= mib * MIB
        assert b.planned_bytes >= mib * MIB - 2 * MIB  # nothing large left unplanned
        assert b.max_flows >= MIN_FLOWS
        assert b.baseline_bytes == BASELINE_BYTES
        assert b.ring_bytes == 4 * b.ring_block_size * b.ring_block_count
        assert b.ring_block_size & (b.ring_block_size - 1) == 0 and b.ring_block_size % 4096 == 0
        assert flow_table_peak_bytes(b.max_flows) <= b.table_bytes < flow_table_peak_bytes(b.max_flows + 64)
        assert 64 <= b.output_batch <= 65536 and b.fragment_capacity >= 1024
    # rings never exceed their share; a large grant gets the full requested ring (1 MiB x 32)
    spendable_512 = 512 * MIB - BASELINE_BYTES - budgets[512].headroom_bytes
    assert budgets[512].ring_bytes <= RING_SHARE * spendable_512
    assert (budgets[4096].ring_block_size, budgets[4096].ring_block_count) == (1 << 20, 32)
    assert budgets[4096].max_flows > 5_000_000  # the last doubling holds 1.5 tables


def test_budget_workers_interfaces_and_snaplen() -> None:
    one = plan_budget(LimitsSection(max_memory_mib=1024))
    two = plan_budget(LimitsSection(max_memory_mib=1024), workers=2)
    assert two.max_flows < 0.6 * one.max_flows  # the table is per worker
    assert two.table_bytes <= one.table_bytes + 8 * MIB
    jumbo = plan_budget(LimitsSection(max_memory_mib=1024), snaplen=65535)
    assert jumbo.ring_block_size >= 16 * frame_bytes(65535)
    small_ring = plan_budget(LimitsSection(max_memory_mib=1024), ring_block_size=1 << 18, ring_block_count=8)
    assert (small_ring.ring_block_size, small_ring.ring_block_count) == (1 << 18, 8)
    assert small_ring.max_flows > one.max_flows  # memory the rings did not take goes to the table


def test_too_small_grant_names_the_minimum() -> None:
    with pytest.raises(ConfigError) as err:
        plan_budget(LimitsSection(max_memory_mib=128))
    message = str(err.value)
    assert "max_memory_mib=128" in message
    minimum = int(message.split("at least ")[1].split(" MiB")[0])
    assert BASELINE_BYTES // MIB < minimum < BASELINE_BYTES // MIB + 40
    assert plan_budget(LimitsSection(max_memory_mib=minimum)).max_flows >= MIN_FLOWS
    with pytest.raises(ConfigError, match=f"at least {minimum} MiB"):
        plan_budget(LimitsSection(max_memory_mib=minimum - 1))
    with pytest.raises(ConfigError, match="at least"):  # more interfaces need more rings
        plan_budget(LimitsSection(max_memory_mib=minimum), interfaces_hint=64)


def test_baseline_covers_a_warm_agent_process() -> None:
    """A process with the agent's modules imported and every kernel loaded fits BASELINE_BYTES."""
    script = textwrap.dedent(
        """
        import importlib, json
        for mod in ("cloudtap.agent.runner", "cloudtap.agent.control", "cloudtap.agent.sinks",
                    "cloudtap.cli.main", "pyarrow.parquet", "psutil", "prometheus_client", "pyroute2"):
            try:
                importlib.import_module(mod)
            except ImportError:
                pass
        from cloudtap.agent.warmup import warm_up
        warm_up()
        from cloudtap.agent.guard import read_rss
        print(json.dumps({"rss": read_rss(exclude_file_pages=True), "all": read_rss()}))
        """
    )
    env = {**os.environ, "NUMBA_CACHE_DIR": os.environ.get("NUMBA_CACHE_DIR", str(REPO / ".numba-cache"))}
    # The first run may compile the kernels into the cache (compiler memory); measure a warm start.
    subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    measured = json.loads(out.stdout.strip().splitlines()[-1])
    # what the guard counts (anonymous memory: see RssWatch); library pages vary with the page cache
    rss = measured["rss"]
    assert 0.2 * BASELINE_BYTES < rss <= BASELINE_BYTES, (
        f"warm agent {rss / MIB:.0f} MiB ({measured['all'] / MIB:.0f} RSS)"
    )


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


@pytest.mark.parametrize("max_flows", [16, 4096, 5000, 65536, 100_003, 1 << 20])
def test_the_agent_table_doubles_onto_its_budgeted_size(max_flows: int) -> None:
    start = initial_flows_for(max_flows)
    assert start <= max_flows and (start >= INITIAL_FLOWS or start == max_flows)
    meter = Meter(MeterConfig(max_flows=max_flows, initial_flows=start, output_batch=64))
    sizes = [meter.capacity]
    while meter.capacity < max_flows:
        meter._grow()
        sizes.append(meter.capacity)
    assert sizes[-1] == max_flows
    steps = [flow_table_bytes(a) + flow_table_bytes(b) for a, b in zip(sizes, sizes[1:], strict=False)]
    assert max([flow_table_bytes(max_flows), *steps]) == flow_table_peak_bytes(max_flows)
    assert flow_table_peak_bytes(max_flows) <= 1.6 * flow_table_bytes(max_flows)

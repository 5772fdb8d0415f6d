"""Memory budget: how the grant is split, checked against the meter's real tables and a warm process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cloudtap.agent.budget import (
    BASELINE_BYTES,
    INITIAL_FLOWS,
    MIB,
    MIN_FLOWS,
    RING_SHARE,
    flow_table_bytes,
    flow_table_peak_bytes,
    frame_bytes,
    initial_flows_for,
    output_buffer_bytes,
    plan_budget,
)
from cloudtap.agent.config import LimitsSection
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

"""The agent's memory plan: how ``limits.max_memory_mib`` is split before anything is allocated.

:func:`plan_budget` splits the grant between the Python/numba baseline, the capture rings, the flow
table, the meter's output buffers, the fragment table and (when requests are parsed) the request
parser's fixed-size tables; the ``*_bytes`` functions say what each of those holds. At run time
:class:`~cloudtap.agent.guard.RssWatch` checks the process against the same grant.
"""

from __future__ import annotations

from dataclasses import dataclass

from cloudtap.agent.config import LimitsSection
from cloudtap.decode._fragment_kernels import TABLE_DTYPE as FRAGMENT_SLOT_DTYPE
from cloudtap.errors import ConfigError
from cloudtap.l7.parser import RequestConfig
from cloudtap.meter._state import DIR_STATE_DTYPE, EDGE_DELTA_DTYPE, FLOW_STATE_DTYPE
from cloudtap.meter.config import MeterConfig
from cloudtap.schema.flow import FLOW_DTYPE
from cloudtap.schema.packet import PACKET_DTYPE
from cloudtap.schema.request import L7_DTYPE

MIB = 1 << 20

#: Resident memory (VmRSS) of a warm agent process before any table or ring, measured 2026-11-26 on
#: CPython 3.11 / numpy 2.4 / numba 0.68 / pyarrow 26 / x86-64 with the script of
#: ``tests/agent/test_budget.py`` (cli + runner + control + sinks + pyarrow.parquet + psutil +
#: prometheus-client + pyroute2 imported, then ``warm_up()`` loading every kernel from the cache):
#: 216 MiB (RssAnon 94 + RssFile 121; PSS 125-135 MiB), of which numpy + numba + llvmlite ~90 MiB at
#: import and ~50 MiB more once the kernels are loaded (68 MiB of it libllvmlite.so pages), pyarrow
#: ~30 MiB, pyroute2 ~20 MiB (live interface mode only). ``cloudtap agent run --replay`` peaks at
#: 226 MiB. The 296 MiB once measured in a fresh venv was a cold numba cache (a checkout changes the
#: source mtimes numba keys its cache on): compiling in-process keeps ~200 MiB of compiler memory
#: (385-430 MiB); ``warm_up`` now compiles in a child process instead. The 50 MiB pandas that
#: pyarrow loads when installed is kept out by :func:`cloudtap.agent.lean.keep_pandas_out`.
#: 240 MiB leaves ~10% slack; the guard test re-measures and fails if a warm process outgrows it.
BASELINE_BYTES = 240 * MIB
#: Slack for the Python heap, arrow conversion and allocator fragmentation: max(this, 5% of grant).
MIN_HEADROOM_BYTES = 16 * MIB
HEADROOM_FRACTION = 0.05
#: Share of the spendable memory (after baseline and headroom) the rings may take at most.
RING_SHARE = 0.40
#: Share for the meter's output buffers (records + edge deltas, x3 for copies in flight).
OUTPUT_SHARE = 0.12
OUTPUT_COPIES = 3
#: Smallest useful sizes; below them the agent cannot run (plan_budget raises ConfigError).
MIN_FLOWS = 4096
MIN_OUTPUT_BATCH = 1024
MIN_FRAGMENTS = 1024
MIN_RING_BLOCKS = 4
MIN_RING_BLOCK_BYTES = 64 * 1024
#: Upper bounds (the meter's own limits and sane TPACKET_V3 block sizes: order <= 10 pages).
MAX_FLOWS = 1 << 28
INITIAL_FLOWS = MeterConfig.model_fields["initial_flows"].default  #: the table starts this small and doubles
MAX_OUTPUT_BATCH = 65536
MAX_FRAGMENTS = 65536
MAX_RING_BLOCK_BYTES = 4 * MIB
DEFAULT_RING_BLOCK_BYTES = 1 * MIB
DEFAULT_RING_BLOCKS = 32
#: TPACKET_V3 per-frame overhead: tpacket3_hdr (48) + sockaddr_ll (20), aligned, plus VLAN room.
_TPACKET3_OVERHEAD = 96
#: FrameBatch columns per frame: offset i8, cap_len u4, wire_len u4, ts_ns i8, linktype u2, interface u2.
_FRAME_COLUMNS_BYTES = 28


@dataclass(frozen=True)
class Budget:
    """How the memory grant is split (sizes per capture worker; rings per interface and worker).

    Attributes:
        max_flows: flow table capacity of each worker's meter.
        ring_block_size / ring_block_count: TPACKET_V3 ring of each (interface, worker) socket.
        output_batch: the meter's record/edge buffer rows.
        fragment_capacity: slots of each worker's fragment table.
        baseline_bytes ... headroom_bytes: the planned split of the grant (totals, for status);
            ``request_bytes`` is every worker's request parser (0 when requests are not parsed).
    """

    max_flows: int
    ring_block_size: int
    ring_block_count: int
    output_batch: int
    fragment_capacity: int
    grant_bytes: int = 0
    baseline_bytes: int = 0
    ring_bytes: int = 0
    table_bytes: int = 0
    output_bytes: int = 0
    fragment_bytes: int = 0
    decode_bytes: int = 0
    headroom_bytes: int = 0
    request_bytes: int = 0

    @property
    def planned_bytes(self) -> int:
        """Everything planned (never above ``grant_bytes``)."""
        return (
            self.baseline_bytes
            + self.ring_bytes
            + self.table_bytes
            + self.output_bytes
            + self.fragment_bytes
            + self.decode_bytes
            + self.headroom_bytes
            + self.request_bytes
        )


def _pow2_at_least(n: int) -> int:
    return 1 << max(4, (n - 1).bit_length())


def _pow2_at_most(n: int) -> int:
    return 1 << (max(1, n).bit_length() - 1)


def flow_table_bytes(max_flows: int) -> int:
    """Bytes of a :class:`~cloudtap.meter.meter.Meter` flow table of ``max_flows`` slots.

    Mirrors the meter's allocation: flow state, two direction states, an open-addressing index of
    ``pow2 >= 2*max_flows`` (slot + hash, int32 + uint32), the free list and the active list (+pos).
    About 364 bytes per slot.
    """
    index = _pow2_at_least(2 * max_flows)
    per_slot = FLOW_STATE_DTYPE.itemsize + 2 * DIR_STATE_DTYPE.itemsize + 3 * 4
    return max_flows * per_slot + index * (4 + 4)


def initial_flows_for(max_flows: int) -> int:
    """The start size (near :data:`INITIAL_FLOWS`) from which the table doubles to ``max_flows``: the last
    doubling then grows from about half of it."""
    start = max_flows
    while -(-start // 2) >= INITIAL_FLOWS:
        start = -(-start // 2)
    return start


def flow_table_peak_bytes(max_flows: int) -> int:
    """Bytes a table growing from :func:`initial_flows_for` up to ``max_flows`` slots holds at its peak: the
    full table plus the one it doubled from, while the state is copied over."""
    cap = initial_flows_for(max_flows)
    if cap >= max_flows:
        return flow_table_bytes(max_flows)
    while 2 * cap < max_flows:
        cap *= 2
    return flow_table_bytes(max_flows) + flow_table_bytes(cap)


def output_buffer_bytes(output_batch: int) -> int:
    """Bytes of the meter's output buffers (flow records + edge deltas) of ``output_batch`` rows."""
    return output_batch * (FLOW_DTYPE.itemsize + EDGE_DELTA_DTYPE.itemsize)


def request_parser_bytes(config: RequestConfig) -> int:
    """Bytes one worker's request parser holds: its tables and output buffer, plus the drained copies of
    that buffer in flight (``OUTPUT_COPIES`` in all, as for the meter's output)."""
    return config.memory_bytes + (OUTPUT_COPIES - 1) * config.out_rows * L7_DTYPE.itemsize


def fragment_table_bytes(capacity: int) -> int:
    """Bytes of a fragment table of ``capacity`` slots (rounded up to a power of two)."""
    return _pow2_at_least(capacity) * FRAGMENT_SLOT_DTYPE.itemsize


def frame_bytes(snaplen: int) -> int:
    """Ring bytes one captured frame of ``snaplen`` takes (TPACKET_V3 header + data, 16-aligned)."""
    return (snaplen + _TPACKET3_OVERHEAD + 15) // 16 * 16


def _min_ring_block(snaplen: int) -> int:
    return min(MAX_RING_BLOCK_BYTES, _pow2_at_least(max(MIN_RING_BLOCK_BYTES, 16 * frame_bytes(snaplen))))


def _max_flows_within(nbytes: int) -> int:
    lo, hi = 0, MAX_FLOWS
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if flow_table_peak_bytes(mid) <= nbytes:
            lo = mid
        else:
            hi = mid - 1
    return lo


@dataclass(frozen=True)
class _Plan:
    budget: Budget | None
    shortfall: int


def _plan(
    grant: int, rings: int, workers: int, snaplen: int, want_block: int, want_count: int, requests: int = 0
) -> _Plan:
    headroom = max(MIN_HEADROOM_BYTES, int(HEADROOM_FRACTION * grant))
    spendable = grant - BASELINE_BYTES - headroom
    # Rings: the requested size, shrunk to the ring share (never below the minimum ring).
    min_block = _min_ring_block(snaplen)
    min_ring = min_block * MIN_RING_BLOCKS
    block = max(min_block, min(MAX_RING_BLOCK_BYTES, _pow2_at_most(want_block)))
    count = max(MIN_RING_BLOCKS, want_count)
    per_ring = min(block * count, max(min_ring, int(RING_SHARE * max(spendable, 0)) // rings))
    while block > min_block and per_ring // block < 8:
        block //= 2
    count = max(MIN_RING_BLOCKS, min(count, per_ring // block))
    ring_bytes = rings * block * count
    # Decoding one batch (frames stay in the ring): up to a ring of frames -> columns + decoded rows.
    frames = block * count // frame_bytes(snaplen)
    decode = workers * frames * (PACKET_DTYPE.itemsize + _FRAME_COLUMNS_BYTES)
    # Output buffers, fragments, then the flow table gets the rest.
    per_worker = max(spendable - ring_bytes - decode, 0) // workers - requests  # the parser's size is fixed
    out_rows = _pow2_at_most(int(OUTPUT_SHARE * per_worker) // (OUTPUT_COPIES * output_buffer_bytes(1)))
    out_rows = max(MIN_OUTPUT_BATCH, min(MAX_OUTPUT_BATCH, out_rows))
    output = OUTPUT_COPIES * output_buffer_bytes(out_rows)
    table_share = per_worker - output
    frags = _pow2_at_most(max(table_share // 50, 1) // FRAGMENT_SLOT_DTYPE.itemsize)
    frags = max(MIN_FRAGMENTS, min(MAX_FRAGMENTS, frags))
    fragments = fragment_table_bytes(frags)
    max_flows = _max_flows_within(table_share - fragments)
    per_worker_min = output + fragments + flow_table_peak_bytes(MIN_FLOWS) + requests
    needed = ring_bytes + decode + workers * per_worker_min
    if per_worker <= 0 or max_flows < MIN_FLOWS:
        return _Plan(None, needed - spendable)
    budget = Budget(
        max_flows=max_flows,
        ring_block_size=block,
        ring_block_count=count,
        output_batch=out_rows,
        fragment_capacity=frags,
        grant_bytes=grant,
        baseline_bytes=BASELINE_BYTES,
        ring_bytes=ring_bytes,
        table_bytes=workers * flow_table_peak_bytes(max_flows),
        output_bytes=workers * output,
        fragment_bytes=workers * fragments,
        decode_bytes=decode,
        headroom_bytes=headroom,
        request_bytes=workers * requests,
    )
    return _Plan(budget, 0)


def plan_budget(
    limits: LimitsSection,
    interfaces_hint: int = 4,
    snaplen: int = 256,
    *,
    workers: int = 1,
    ring_block_size: int = DEFAULT_RING_BLOCK_BYTES,
    ring_block_count: int = DEFAULT_RING_BLOCKS,
    request_bytes: int = 0,
) -> Budget:
    """Split ``limits.max_memory_mib`` between baseline, rings, flow table and buffers.

    Args:
        limits: the user's grant.
        interfaces_hint: interfaces expected to be captured at once (each has its own ring).
        snaplen: bytes kept per packet (sets the smallest usable ring block).
        workers: capture workers; each has its own table, buffers and a ring per interface.
        ring_block_size / ring_block_count: the requested ring (``capture.ring_block_*``): an
            upper bound, shrunk to at most ``RING_SHARE`` of the spendable memory.
        request_bytes: each worker's request parser (``RequestConfig.memory_bytes``; 0: none); fixed,
            so it comes off the flow table's share.

    Returns:
        The sizes; ``max_flows`` is per worker, rings per (interface, worker).

    Raises:
        ConfigError: the grant cannot hold the baseline and the smallest table, rings and buffers;
            the message names the minimum ``limits.max_memory_mib``.
    """
    if interfaces_hint < 1 or workers < 1:
        raise ConfigError(
            f"plan_budget: interfaces_hint and workers must be >= 1 ({interfaces_hint}, {workers})"
        )
    if request_bytes < 0:
        raise ConfigError(f"plan_budget: request_bytes must be >= 0 ({request_bytes})")
    rings = interfaces_hint * workers
    args = (rings, workers, snaplen, ring_block_size, ring_block_count, request_bytes)
    plan = _plan(limits.max_memory_mib * MIB, *args)
    if plan.budget is not None:
        return plan.budget
    minimum = limits.max_memory_mib + max(1, plan.shortfall // MIB)
    while _plan(minimum * MIB, *args).budget is None:  # headroom grows with the grant: settle it
        minimum += 1
    while minimum > 64 and _plan((minimum - 1) * MIB, *args).budget is not None:
        minimum -= 1
    raise ConfigError(
        f"limits.max_memory_mib={limits.max_memory_mib} is too small: the agent needs at least {minimum} MiB "
        f"({BASELINE_BYTES // MIB} MiB Python/numba baseline + rings for {interfaces_hint} interface(s) x "
        f"{workers} worker(s) + a {MIN_FLOWS}-flow table"
        + (f" + {request_bytes // MIB} MiB request parser per worker)" if request_bytes else ")")
    )

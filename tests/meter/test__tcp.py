"""Per-segment TCP sequence analysis (cloudtap.meter._tcp) against the reference's Wireshark rules."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudtap.meter._state import DIR_STATE_DTYPE
from cloudtap.meter._tcp import analyse_segment, seq_gt, seq_le, seq_lt
from cloudtap.meter.reference_flow import Side
from cloudtap.meter.reference_tcp import analyse_sequence

MS = 1_000_000
QUIRKS = frozenset(
    {"ooo_before_spurious", "ooo_ignores_syn_fin"}
)  # the kernel's, see reference.KERNEL_QUIRKS


@pytest.mark.parametrize(
    ("a", "b", "lt", "gt"),
    [(1, 2, True, False), (2, 1, False, True), (5, 5, False, False), (0xFFFF_FFF0, 5, True, False),
     (5, 0xFFFF_FFF0, False, True), (0, 0x7FFF_FFFF, True, False)],
)  # fmt: skip
def test_sequence_comparisons_wrap(a: int, b: int, lt: bool, gt: bool) -> None:
    assert seq_lt(np.uint32(a), np.uint32(b)) == lt
    assert seq_gt(np.uint32(a), np.uint32(b)) == gt
    assert seq_le(np.uint32(a), np.uint32(b)) == (lt or a == b)


def _segment(
    ds: np.ndarray, d: int, ts: int, seq: int, ack: int, flags: int, win: int, n: int, irtt: int
) -> int:
    return int(analyse_segment(ds, d, 1 - d, ts, np.uint32(seq), np.uint32(ack), flags, win, n, irtt))


def test_verdict_codes_and_counters() -> None:
    ds = np.zeros(2, DIR_STATE_DTYPE)
    assert _segment(ds, 0, 0, 1000, 1, 0x10, 100, 100, 0) == 0  # first data: sets the next sequence
    assert int(ds[0]["nextseq"]) == 1100
    assert _segment(ds, 0, 1 * MS, 900, 1, 0x10, 100, 100, 0) == 2  # below, within 3 ms: out of order
    assert _segment(ds, 0, 50 * MS, 1000, 1, 0x10, 100, 100, 0) == 1  # a repeat, later: retransmission
    assert _segment(ds, 0, 60 * MS, 1099, 1, 0x10, 100, 0, 0) == 0  # keep-alive
    assert _segment(ds, 1, 61 * MS, 5, 1100, 0x10, 0, 0, 0) == 0  # the peer closes its window
    assert _segment(ds, 0, 62 * MS, 1100, 1, 0x10, 100, 1, 0) == 0  # zero-window probe
    assert int(ds[0]["nextseq"]) == 1100  # a probe does not advance the sequence
    assert (int(ds[0]["retrans"]), int(ds[0]["sec_retrans"]), int(ds[0]["ooo"])) == (1, 1, 1)
    assert (int(ds[0]["zero_window"]), int(ds[1]["zero_window"])) == (0, 1)


# A segment: direction, time step, sequence and ack choices (relative to each side's base), flags,
# window, payload, handshake RTT. Few values, so that segments often repeat, overlap and collide.
SEGMENTS = st.lists(
    st.tuples(
        st.integers(0, 1),
        st.sampled_from([0, 100_000, 1 * MS, 2_500_000, 25 * MS, 1_000 * MS]),
        st.integers(-1, 6),
        st.integers(-1, 6),
        st.sampled_from([0x10, 0x18, 0x02, 0x12, 0x11, 0x04, 0x14, 0x01]),
        st.sampled_from([0, 1000]),
        st.sampled_from([0, 1, 2, 100]),
        st.sampled_from([0, 2 * MS]),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(SEGMENTS, st.sampled_from([1000, 0xFFFF_FF00]))
def test_kernel_matches_reference_segment_by_segment(segments: list[tuple[int, ...]], base: int) -> None:
    ds = np.zeros(2, DIR_STATE_DTYPE)
    sides = (Side(), Side())
    bases = (base, 70_000)
    ts = 10**18
    for d, step, seq_k, ack_k, flags, win, n, irtt in segments:
        ts += step
        seq = (bases[d] + 50 * seq_k) & 0xFFFF_FFFF
        ack = (bases[1 - d] + 50 * ack_k) & 0xFFFF_FFFF
        got = _segment(ds, d, ts, seq, ack, flags, win, n, irtt)
        want = analyse_sequence(sides[d], sides[1 - d], ts, seq, ack, flags, win, n, irtt)
        assert got == want
        for i in (0, 1):
            row, side = ds[i], sides[i]
            assert int(row["nextseq"]) == side.nextseq
            assert int(row["dupacks"]) == side.dupacks
            assert int(row["zero_window"]) == side.zero_window

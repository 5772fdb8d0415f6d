"""Per-segment TCP sequence analysis (numba), modelled on Wireshark's ``tcp_analyze_sequence_number``.

Following the same rules as the oracle makes our retransmission and out-of-order counts comparable
segment for segment: retransmission = Wireshark's retransmission, fast retransmission and spurious
retransmission verdicts; keep-alives are never retransmissions; zero-window counts segments that
advertise a zero window without SYN/FIN/RST (zero-window probes excluded). Sequence state of "0"
means unknown, as in Wireshark.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from cloudtap._kernel_opts import NO_ALLOC_OPTS
from cloudtap.meter._state import (
    LAST_SEG_KEEPALIVE,
    LAST_SEG_NONE,
    LAST_SEG_PLAIN,
    LAST_SEG_ZERO_WINDOW_PROBE,
)

_FIN = 0x01
_SYN = 0x02
_RST = 0x04
_FAST_RETRANS_WINDOW_NS = 20_000_000
_DEFAULT_OOO_THRESHOLD_NS = 3_000_000


@njit(**NO_ALLOC_OPTS)
def seq_lt(a: np.uint32, b: np.uint32) -> bool:
    """a < b in 32-bit sequence space."""
    return np.int32(np.uint32(a - b)) < 0


@njit(**NO_ALLOC_OPTS)
def seq_gt(a: np.uint32, b: np.uint32) -> bool:
    """a > b in 32-bit sequence space."""
    return np.int32(np.uint32(a - b)) > 0


@njit(**NO_ALLOC_OPTS)
def seq_le(a: np.uint32, b: np.uint32) -> bool:
    """a <= b in 32-bit sequence space."""
    return np.int32(np.uint32(a - b)) <= 0


@njit(**NO_ALLOC_OPTS)
def analyse_segment(
    ds: np.ndarray,
    fwd: int,
    rev: int,
    ts: int,
    seq: np.uint32,
    ack: np.uint32,
    flags: int,
    window: int,
    seglen: int,
    irtt_ns: int,
) -> int:
    """Update direction ``fwd`` of a flow for one segment.

    Args:
        ds: ``DIR_STATE_DTYPE`` array; ``fwd``/``rev`` are the rows of this and the other direction.
        ts: segment timestamp (ns). seq/ack/flags/window/seglen: from the TCP header; seglen is the
            payload length.
        irtt_ns: the flow's handshake RTT (0 when unknown; then 3 ms is the out-of-order threshold).

    Returns:
        0 normal, 1 retransmission, 2 out-of-order.
    """
    f = ds[fwd]
    r = ds[rev]
    verdict = 0
    nextseq_known = f.nextseq != 0
    zwp = seglen == 1 and seq == f.nextseq and r.window == 0 and r.last_seg != LAST_SEG_NONE
    keepalive = False
    if not zwp:
        if window == 0 and (flags & (_RST | _FIN | _SYN)) == 0:
            f.zero_window += 1
        keepalive = (
            (seglen == 0 or seglen == 1)
            and seq == np.uint32(f.nextseq - np.uint32(1))
            and (flags & (_SYN | _FIN | _RST)) == 0
        )
        same = (
            seglen == 0
            and window == f.window
            and seq == f.nextseq
            and ack == f.lastack
            and (flags & (_SYN | _FIN | _RST)) == 0
        )
        ka_ack = same and window != 0 and r.last_seg == LAST_SEG_KEEPALIVE
        zwp_ack = same and window == 0 and r.last_seg == LAST_SEG_ZERO_WINDOW_PROBE
        if same and window != 0 and not ka_ack and not zwp_ack and f.dupacks < 255:
            f.dupacks += 1
    if ack != f.lastack:
        f.dupacks = 0

    if seglen > 0 or (flags & (_SYN | _FIN)) != 0:
        if not keepalive:
            not_advanced = nextseq_known and seq_lt(seq, f.nextseq)
            if seglen > 1 and np.uint32(f.nextseq - np.uint32(1)) == seq:
                not_advanced = False
            threshold = irtt_ns if irtt_ns > 0 else _DEFAULT_OOO_THRESHOLD_NS
            seg_end = np.uint32(seq + np.uint32(seglen))
            if (flags & (_SYN | _FIN)) != 0:
                seg_end = np.uint32(seg_end + np.uint32(1))
            if seglen > 0 and r.lastack != 0 and seq_le(np.uint32(seq + np.uint32(seglen)), r.lastack):
                verdict = 1  # spurious retransmission: data the receiver already acknowledged
            elif not_advanced:
                if r.dupacks >= 2 and r.lastack == seq and ts - r.lastack_ns < _FAST_RETRANS_WINDOW_NS:
                    verdict = 1  # fast retransmission
                elif ts - f.nextseq_ns < threshold and f.nextseq != seg_end:
                    verdict = 2  # out of order
                else:
                    verdict = 1

    nextseq = np.uint32(seq + np.uint32(seglen))
    if (flags & (_SYN | _FIN)) != 0:
        nextseq = np.uint32(nextseq + np.uint32(1))
    if (seq_gt(nextseq, f.nextseq) or not nextseq_known) and not zwp:
        f.nextseq = nextseq
        f.nextseq_ns = ts
    f.window = window
    f.lastack = ack
    f.lastack_ns = ts
    f.last_seg = LAST_SEG_ZERO_WINDOW_PROBE if zwp else (LAST_SEG_KEEPALIVE if keepalive else LAST_SEG_PLAIN)
    if verdict == 1:
        f.retrans += 1
        f.sec_retrans += 1
    elif verdict == 2:
        f.ooo += 1
    return verdict

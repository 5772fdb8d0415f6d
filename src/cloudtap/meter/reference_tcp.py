"""The reference meter's TCP sequence analysis: Wireshark 4.0's rules for one segment, written plainly.

The numba meter's twin is ``meter/_tcp.py`` (``analyse_segment``); ``tests/meter/test__tcp.py`` holds one to the
other segment by segment.
"""

from __future__ import annotations

from cloudtap.meter.reference_flow import Side
from cloudtap.schema.packet import TCP_FIN, TCP_RST, TCP_SYN

_SEQ = 0xFFFF_FFFF
_FAST_RETRANS_NS = 20_000_000
_OOO_DEFAULT_NS = 3_000_000


def seq_diff(a: int, b: int) -> int:
    """a - b in 32-bit sequence space, as a signed number."""
    d = (a - b) & _SEQ
    return d - (1 << 32) if d >= 1 << 31 else d


def analyse_sequence(
    fwd: Side,
    rev: Side,
    ts: int,
    seq: int,
    ack: int,
    flags: int,
    window: int,
    seglen: int,
    irtt: int,
) -> int:
    """Wireshark 4.0 ``tcp_analyze_sequence_number`` for one segment: 0 normal, 1 retrans, 2 ooo."""
    ctl = flags & (TCP_SYN | TCP_FIN | TCP_RST)
    # Zero-window probe: 1 byte at the next sequence while the peer advertises a zero window.
    zwp = seglen == 1 and seq == fwd.nextseq and rev.window == 0
    keepalive = False
    if not zwp:
        if window == 0 and ctl == 0:
            fwd.zero_window += 1
        keepalive = seglen <= 1 and seq == (fwd.nextseq - 1) & _SEQ and ctl == 0
        same = window == fwd.window and seq == fwd.nextseq and ack == fwd.lastack
        repeats = seglen == 0 and same and ctl == 0
        keepalive_ack = repeats and window != 0 and rev.last_keepalive
        if repeats and window != 0 and not keepalive_ack:
            fwd.dupacks += 1
    if ack != fwd.lastack:
        fwd.dupacks = 0

    verdict = 0
    if (seglen > 0 or flags & (TCP_SYN | TCP_FIN)) and not keepalive:
        not_advanced = fwd.nextseq != 0 and seq_diff(seq, fwd.nextseq) < 0
        if seglen > 1 and (fwd.nextseq - 1) & _SEQ == seq:
            not_advanced = False
        spurious = seglen > 0 and rev.lastack != 0 and seq_diff((seq + seglen) & _SEQ, rev.lastack) <= 0
        repeat_end = seq + seglen + (1 if flags & (TCP_SYN | TCP_FIN) else 0)
        ooo = (
            not_advanced
            and ts - fwd.nextseq_ns < (irtt if irtt > 0 else _OOO_DEFAULT_NS)
            and fwd.nextseq != repeat_end & _SEQ
        )
        recent_dupacks = rev.dupacks >= 2 and ts - rev.lastack_ns < _FAST_RETRANS_NS
        fast = not_advanced and recent_dupacks and rev.lastack == seq
        if spurious or fast:
            verdict = 1
        elif ooo:
            verdict = 2
        elif not_advanced:
            verdict = 1

    nextseq = (seq + seglen + (1 if flags & (TCP_SYN | TCP_FIN) else 0)) & _SEQ
    if (fwd.nextseq == 0 or seq_diff(nextseq, fwd.nextseq) > 0) and not zwp:
        fwd.nextseq = nextseq
        fwd.nextseq_ns = ts
    fwd.window = window
    fwd.lastack = ack
    fwd.lastack_ns = ts
    fwd.last_keepalive = keepalive
    return verdict

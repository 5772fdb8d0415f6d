"""Several filters chained into one classic BPF program, each part with its own snap length.

Per-policy snap lengths (``capture/policy_filter.py``) are built with it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cloudtap.capture import _bpf_kernels as _k
from cloudtap.capture.bpf import BpfProgram, compile_filter
from cloudtap.errors import FilterError
from cloudtap.schema.packet import LINKTYPE_ETHERNET


def combine_programs(
    parts: Sequence[tuple[str, int]], linktype: int = LINKTYPE_ETHERNET, optimize: bool = True
) -> BpfProgram:
    """One program running several filters in turn, each returning its own snap length.

    Each expression is compiled by libpcap on its own, with its own snaplen; the programs are laid
    end to end. In every program but the last, each ``ret #0`` becomes ``ja`` to the first
    instruction of the next program (conditional jumps keep pointing at that instruction, so no
    8-bit jump offset changes); accept returns stay ``ret #snaplen``. A frame is therefore kept by
    the first part that accepts it, cut to that part's snaplen, and rejected when none does. Parts
    never see each other's state: ``vlan`` in one part does not shift the offsets of the next, as
    it does when libpcap compiles ``(A) or (B)`` as one expression.

    One difference from the OR of the filters: a fault (a load beyond the packet's bytes, as a filter
    reading ``tcp[20:4]`` does on a pure ACK) ends the whole program with 0, in the kernel as in
    libpcap, so a later part never sees that packet. Filters on addresses and ports (what policies
    hold) read only headers that their own protocol tests guarantee, and never fault on whole packets.

    Args:
        parts: ``(expression, snaplen)`` per part, in the order they are tried ("" accepts all).
        linktype: pcap LINKTYPE of the frames.
        optimize: let libpcap's optimizer shorten each part.

    Returns:
        The program; ``parts`` says where each part starts, ``snaplen`` is the largest one.

    Raises:
        FilterError: no parts, a snaplen below 1, an expression libpcap rejects, or a part that
            returns the accumulator (which libpcap does not emit; it cannot be chained).
    """
    if not parts:
        raise FilterError("combine_programs needs at least one (expression, snaplen) part")
    pieces: list[np.ndarray] = []
    starts: list[int] = []
    pc = 0
    for i, (expression, snaplen) in enumerate(parts):
        if int(snaplen) < 1:
            raise FilterError(f"part {i} ({expression!r}): snaplen must be >= 1, got {snaplen}")
        insns = compile_filter(expression, linktype, int(snaplen), optimize).instructions.copy()
        n = insns.shape[0]
        if i < len(parts) - 1:
            if bool((insns["code"] == _k.RET_A).any()):
                raise FilterError(f"part {i} ({expression!r}) returns the accumulator: cannot chain it")
            rejects = np.flatnonzero((insns["code"] == _k.RET_K) & (insns["k"] == 0))
            insns["code"][rejects] = _k.JA
            insns["jt"][rejects] = 0
            insns["jf"][rejects] = 0
            insns["k"][rejects] = (n - 1 - rejects).astype(np.uint32)  # ja lands on pc + 1 + k == n
        starts.append(pc)
        pieces.append(insns)
        pc += n
    text = "; ".join(f"{e.strip() or '(all)'} -> {int(s)}" for e, s in parts)
    return BpfProgram(
        expression=text,
        linktype=int(linktype),
        snaplen=max(int(s) for _, s in parts),
        instructions=np.concatenate(pieces),
        parts=tuple(starts),
    )

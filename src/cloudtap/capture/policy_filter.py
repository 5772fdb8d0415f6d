"""PolicyFilter: the controller's capture policies as one BPF program, each policy with its own snap length.

The controller compiles, per agent, one part per capture policy (``policy.filters`` of the agent config):
the VMs it selects (``select``, e.g. ``ether host ...``), the policy's own filter (``bpf``), how many
bytes of each packet it keeps (``snaplen``; None keeps the capture's header-only default) and whether
it wants application requests parsed (``requests``). ``combine_programs`` lays the parts end to end:
a packet is kept by the first part that accepts it, cut to that part's snaplen. Parts are tried
largest snaplen first, so a packet between a VM whose policy keeps payload and one whose policy keeps
headers keeps its payload.

Two programs per link type:

* ``kernel_program``, attached to the AF_PACKET sockets. The kernel runs socket filters on frames
  whose 802.1Q tag it has already moved out of the frame, so a ``vlan`` test cannot match there: a
  part whose ``bpf`` says ``vlan`` filters on its VM selection alone in the kernel (a superset).
* ``program``, run on the frames again in the capture worker (``mask``), where the tag is back in
  place: it decides, and cuts ``cap_len`` to the snaplen of the part that accepted the frame. On a
  file or mirror source it is the only filter, so payload is kept per policy there too.

``capture.bpf`` (the operator's own filter), when set, is ANDed into every part.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from cloudtap.capture.bpf import BpfProgram
from cloudtap.capture.bpf_combine import combine_programs
from cloudtap.capture.frames import FrameBatch
from cloudtap.errors import FilterError

#: bytes of headers kept ahead of a policy's payload: Ethernet 14 + two VLAN tags 8 + IPv4 with
#: options 60 + TCP with options 60 = 142, rounded up (IPv6 without extension headers needs 122)
HEADER_BYTES = 144

_VLAN = re.compile(r"\bvlan\b")


def payload_snaplen(payload_bytes: int) -> int:
    """The snap length that keeps ``payload_bytes`` of L4 payload behind the largest usual headers."""
    return min(65535, HEADER_BYTES + int(payload_bytes))


@dataclass(frozen=True)
class FilterPart:
    """One policy's part of the agent's filter (one entry of ``policy.filters``).

    Attributes:
        select: the selected VMs as a filter (``ether host M or host IP ...``); empty selects all.
        bpf: the policy's own filter, ANDed with ``select``; None for none.
        snaplen: bytes kept of each packet; None keeps the capture's default (headers only).
        requests: parse application requests in the packets this part keeps.
        policy: the policy's name (for messages and status).
    """

    select: str = ""
    bpf: str | None = None
    snaplen: int | None = None
    requests: bool = False
    policy: str = ""


def _and(*terms: str | None) -> str:
    present = [t.strip() for t in terms if t and t.strip()]
    if len(present) <= 1:
        return present[0] if present else ""
    return " and ".join(f"({t})" for t in present)


class PolicyFilter:
    """The combined per-policy filter of one agent (see the module doc).

    Attributes:
        parts: the parts in the order they are tried.
        snaplens: the snap length of each part (the default filled in).
        max_snaplen: the largest of them: what the capture rings must keep.
        matched, rejected: frames ``mask`` accepted and rejected so far.
    """

    def __init__(
        self, parts: Sequence[FilterPart], base: str | None = None, default_snaplen: int = 256
    ) -> None:
        """Check every part against libpcap (Ethernet) now: a bad expression raises before anything changes.

        Raises:
            FilterError: no parts, or an expression libpcap rejects.
        """
        if not parts:
            raise FilterError("a policy filter needs at least one part")
        self.base = base.strip() if base and base.strip() else None
        snaplens = [int(p.snaplen) if p.snaplen else int(default_snaplen) for p in parts]
        order = sorted(range(len(parts)), key=lambda i: -snaplens[i])  # stable: the controller's order next
        self.parts = [parts[i] for i in order]
        self.snaplens = [snaplens[i] for i in order]
        self.max_snaplen = max(self.snaplens)
        self._requests = np.array([p.requests for p in self.parts], np.bool_)
        self._programs: dict[int, BpfProgram] = {}
        self._kernel: dict[int, BpfProgram] = {}
        self.matched = 0
        self.rejected = 0
        self._last = threading.local()  #: per capture thread: the request wishes of the frames ``mask`` kept
        self.program(1)
        self.kernel_program(1)

    @classmethod
    def from_entries(
        cls, entries: Iterable[object], base: str | None = None, default_snaplen: int = 256
    ) -> PolicyFilter | None:
        """Build from ``policy.filters`` entries (mappings or objects with FilterPart's fields); None: none."""
        parts = []
        for entry in entries:
            get = entry.get if isinstance(entry, dict) else lambda k, d=None, e=entry: getattr(e, k, d)
            parts.append(
                FilterPart(
                    select=str(get("select", "") or ""),
                    bpf=get("bpf", None) or None,
                    snaplen=get("snaplen", None) or None,
                    requests=bool(get("requests", False)),
                    policy=str(get("policy", "") or ""),
                )
            )
        return cls(parts, base, default_snaplen) if parts else None

    @property
    def requests(self) -> bool:
        """Whether any part wants application requests parsed."""
        return bool(self._requests.any())

    def expressions(self, kernel: bool = False) -> list[str]:
        """The expression of each part (``kernel``: as attached to a socket, see the module doc)."""
        out = []
        for part in self.parts:
            bpf = None if kernel and part.bpf and _VLAN.search(part.bpf) else part.bpf
            out.append(_and(self.base, part.select, bpf))
        return out

    def program(self, linktype: int) -> BpfProgram:
        """The combined program for frames of ``linktype`` as the worker sees them (tags in place)."""
        prog = self._programs.get(linktype)
        if prog is None:
            prog = combine_programs(list(zip(self.expressions(), self.snaplens, strict=True)), linktype)
            self._programs[linktype] = prog
        return prog

    def kernel_program(self, linktype: int) -> BpfProgram:
        """The combined program to attach to AF_PACKET sockets of ``linktype`` (``vlan`` parts widened)."""
        prog = self._kernel.get(linktype)
        if prog is None:
            prog = combine_programs(
                list(zip(self.expressions(kernel=True), self.snaplens, strict=True)), linktype
            )
            self._kernel[linktype] = prog
        return prog

    def classify(self, frames: FrameBatch) -> tuple[np.ndarray, np.ndarray]:
        """Per frame, the bytes to keep (0: rejected) and the index of the part that accepted it (-1: none).

        Frames of several link types each get their link type's program.
        """
        n = len(frames)
        keep = np.zeros(n, np.uint32)
        part = np.full(n, -1, np.int32)
        if n == 0:
            return keep, part
        lts = frames.linktype
        first = int(lts[0])
        if bool((lts == first).all()):
            return self.program(first).returns(frames)
        for lt in np.unique(lts).tolist():
            index = np.flatnonzero(lts == lt)
            sub = FrameBatch(
                frames.data,
                frames.offset[index],
                frames.cap_len[index],
                frames.wire_len[index],
                frames.ts_ns[index],
                lts[index],
                frames.interface[index],
            )
            keep[index], part[index] = self.program(int(lt)).returns(sub)
        return keep, part

    def mask(self, frames: FrameBatch) -> np.ndarray:
        """Verdicts for every frame (the ``FrameFilter`` interface); cuts ``cap_len`` of the accepted ones.

        The cut happens in place, in the batch's own ``cap_len`` array (a source's fresh array), to
        the accepting part's snaplen, as the kernel cuts frames in the ring.
        """
        keep, part = self.classify(frames)
        ok = keep > 0
        if self._requests.any():  # for wants_requests on the frames kept, in this thread, without a second run
            self._last.wanted = self._requests[part[ok]]
        hits = int(np.count_nonzero(ok))
        self.matched += hits
        self.rejected += len(frames) - hits
        if hits and frames.cap_len.flags.writeable:
            np.minimum(frames.cap_len, np.where(ok, keep, frames.cap_len), out=frames.cap_len)
        return ok

    @property
    def any_requests(self) -> bool:
        """Whether some part wants application requests parsed."""
        return bool(self._requests.any())

    def wants_requests(self, frames: FrameBatch) -> np.ndarray:
        """``bool[n]``: which frames a part that wants application requests accepts.

        Right after ``mask`` in the same thread, on the frames it kept (the pipeline's next step), the parts
        ``mask`` found are reused: the programs do not run twice per batch.
        """
        n = len(frames)
        if not self._requests.any():
            return np.zeros(n, np.bool_)
        wanted = getattr(self._last, "wanted", None)
        if wanted is not None and len(wanted) == n:
            self._last.wanted = None
            return wanted
        _, part = self.classify(frames)
        return np.where(part >= 0, self._requests[np.maximum(part, 0)], False)

"""tcpdump-syntax packet filters: compiled by libpcap, run by a numba classic-BPF VM.

``compile_filter`` hands the expression to libpcap (through ctypes, on a dead handle of the given
link type) and copies the classic BPF program it emits into numpy. The same program can filter
frame batches offline (``BpfProgram.match``, one numba call per batch) or be attached to a live
socket with ``SO_ATTACH_FILTER`` (``BpfProgram.as_sock_fprog``). ``FrameFilter`` applies one
expression to batches whose frames may carry different link types (pcapng).

A program's return value is the number of bytes a socket keeps of an accepted packet (its snaplen);
``BpfProgram.returns`` gives it per frame. ``combine_programs`` (``capture/bpf_combine.py``) chains
several expressions, each with its own snaplen, into one program (per-policy snap lengths:
``capture/policy_filter.py``).

Programs are compiled without libpcap's Linux live-capture VLAN handling (ancillary loads), so
``vlan`` tests the tag bytes in the frame, as tcpdump does on a file.
"""

from __future__ import annotations

import ctypes
import re
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from cloudtap.capture import _bpf_kernels as _k
from cloudtap.capture.frames import FrameBatch
from cloudtap.capture.libpcap import BpfInsn, compile_to_instructions
from cloudtap.errors import FilterError

BPF_INSN_DTYPE = np.dtype([("code", "<u2"), ("jt", "u1"), ("jf", "u1"), ("k", "<u4")])
"""One classic BPF instruction, laid out as ``struct bpf_insn`` / ``struct sock_filter``."""

DEFAULT_SNAPLEN = 262144
SO_ATTACH_FILTER = 26
KERNEL_MAX_INSNS = 4096  # BPF_MAXINSNS of the Linux socket filter

_EN10MB = 1
_NO_INDEX = np.zeros(0, np.int64)
_NO_RETS = np.zeros(0, np.uint32)
_NO_PC = np.zeros(0, np.int32)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(BpfInsn))]


def _validate(insns: np.ndarray) -> str | None:
    """Return why ``insns`` is not a valid classic BPF program, or None if it is."""
    n = insns.shape[0]
    if n == 0:
        return "empty program"
    for pc in range(n):
        code, jt, jf, k = (
            int(insns["code"][pc]),
            int(insns["jt"][pc]),
            int(insns["jf"][pc]),
            int(insns["k"][pc]),
        )
        if code not in _k.ALL_OPCODES:
            return f"instruction {pc}: unknown opcode {code:#06x}"
        if code in (_k.LD_MEM, _k.LDX_MEM, _k.ST, _k.STX) and k >= _k.MEMWORDS:
            return f"instruction {pc}: scratch word {k} out of range"
        if code in (_k.DIV_K, _k.MOD_K) and k == 0:
            return f"instruction {pc}: constant division by zero"
        if code == _k.JA:
            off = k - (1 << 32) if k >= (1 << 31) else k
            if not 0 <= pc + 1 + off < n or off == -1:
                return f"instruction {pc}: jump out of the program"
        elif code & 0x07 == 0x05 and (pc + 1 + jt >= n or pc + 1 + jf >= n):
            return f"instruction {pc}: jump out of the program"
    if int(insns["code"][n - 1]) & 0x07 != 0x06:
        return "program does not end with ret"
    return None


@dataclass(frozen=True, eq=False)
class BpfProgram:
    """A compiled classic BPF filter.

    Attributes:
        expression: the tcpdump-syntax expression it was compiled from.
        linktype: pcap LINKTYPE of the frames it applies to.
        snaplen: snapshot length given to the compiler (the accept return value; for a program of
            several parts, the largest of theirs).
        instructions: ``BPF_INSN_DTYPE[n]``, the program as libpcap emits it (read-only).
        parts: where each part of a program built by ``combine_programs`` starts (empty otherwise).
    """

    expression: str
    linktype: int
    snaplen: int
    instructions: np.ndarray
    parts: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        insns = np.array(self.instructions, dtype=BPF_INSN_DTYPE, copy=True).reshape(-1)
        why = _validate(insns)
        if why is not None:
            raise FilterError(f"invalid BPF program for {self.expression!r}: {why}")
        if self.parts and (
            self.parts[0] != 0 or list(self.parts) != sorted(set(self.parts)) or self.parts[-1] >= len(insns)
        ):
            raise FilterError(f"invalid BPF program for {self.expression!r}: part starts {self.parts}")
        insns.setflags(write=False)
        object.__setattr__(self, "instructions", insns)

    def __len__(self) -> int:
        return int(self.instructions.shape[0])

    @cached_property
    def _fields(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        ins = self.instructions
        return (
            ins["code"].astype(np.int64),
            ins["jt"].astype(np.int64),
            ins["jf"].astype(np.int64),
            ins["k"].astype(np.int64),
        )

    def as_sock_fprog(self) -> tuple[bytes, ctypes.Array[BpfInsn]]:
        """Build a ``struct sock_fprog`` for ``setsockopt(SOL_SOCKET, SO_ATTACH_FILTER, ...)``.

        Returns:
            ``(fprog_bytes, keepalive)``: the struct as bytes, and the ctypes instruction array its
            pointer refers to; keep ``keepalive`` referenced until ``setsockopt`` has returned.

        Raises:
            FilterError: the program is longer than the kernel accepts or jumps backwards.
        """
        n = len(self)
        if n > KERNEL_MAX_INSNS:
            raise FilterError(
                f"filter {self.expression!r} has {n} instructions, the kernel accepts {KERNEL_MAX_INSNS}"
            )
        ja = self.instructions["code"] == _k.JA
        if bool((self.instructions["k"][ja] >= (1 << 31)).any()):
            raise FilterError(f"filter {self.expression!r} jumps backwards, which the kernel rejects")
        arr = (BpfInsn * n)()
        ctypes.memmove(arr, np.ascontiguousarray(self.instructions).tobytes(), n * BPF_INSN_DTYPE.itemsize)
        fprog = _SockFprog(n, ctypes.cast(arr, ctypes.POINTER(BpfInsn)))
        return bytes(fprog), arr

    def match(self, frames: FrameBatch) -> np.ndarray:
        """Run the program over every frame of ``frames``.

        Args:
            frames: a batch whose frames all have this program's link type.

        Returns:
            ``bool[n]``, True where the program accepts the frame.

        Raises:
            ValueError: a frame has another link type.
        """
        n = len(frames)
        out = np.zeros(n, np.bool_)
        if n == 0:
            return out
        self._check_linktype(frames)
        self._run(frames, _NO_INDEX, False, out, _NO_RETS, _NO_PC)
        return out

    def returns(self, frames: FrameBatch) -> tuple[np.ndarray, np.ndarray]:
        """What the program returns for every frame, and which part returned it.

        Args:
            frames: a batch whose frames all have this program's link type.

        Returns:
            ``(rets, part)``: ``uint32[n]`` return values (the bytes a socket keeps: the frame is cut
            to ``min(cap_len, ret)``; 0 rejects), and ``int32[n]`` the index of the part (see
            ``combine_programs``; 0 for a plain program) whose ``ret`` accepted the frame, -1 where
            the frame is rejected.

        Raises:
            ValueError: a frame has another link type.
        """
        n = len(frames)
        out = np.zeros(n, np.bool_)
        rets = np.zeros(n, np.uint32)
        at = np.full(n, -1, np.int32)
        if n == 0:
            return rets, at
        self._check_linktype(frames)
        self._run(frames, _NO_INDEX, False, out, rets, at)
        part = np.full(n, -1, np.int32)
        starts = np.asarray(self.parts or (0,), np.int64)
        part[out] = (np.searchsorted(starts, at[out], side="right") - 1).astype(np.int32)
        return rets, part

    def _check_linktype(self, frames: FrameBatch) -> None:
        if bool((frames.linktype != self.linktype).any()):
            raise ValueError(
                f"filter {self.expression!r} was compiled for linktype {self.linktype}, "
                f"batch has linktypes {sorted(set(np.unique(frames.linktype).tolist()))}"
            )

    def _run(
        self,
        frames: FrameBatch,
        index: np.ndarray,
        use_index: bool,
        out: np.ndarray,
        rets: np.ndarray,
        at: np.ndarray,
    ) -> int:
        code, jt, jf, k = self._fields
        data, offset, cap_len, wire_len = frames.data, frames.offset, frames.cap_len, frames.wire_len
        return int(
            _k.run_batch(code, jt, jf, k, data, offset, cap_len, wire_len, index, use_index, out, rets, at)
        )

    def _match_into(self, frames: FrameBatch, index: np.ndarray, out: np.ndarray) -> int:
        return self._run(frames, index, True, out, _NO_RETS, _NO_PC)


def compile_filter(
    expression: str, linktype: int = _EN10MB, snaplen: int = DEFAULT_SNAPLEN, optimize: bool = True
) -> BpfProgram:
    """Compile a tcpdump-syntax expression with libpcap.

    Args:
        expression: filter expression, e.g. ``"tcp port 80"`` (empty accepts everything).
        linktype: pcap LINKTYPE of the frames to filter (1 = Ethernet).
        snaplen: snapshot length; the program returns it for accepted packets.
        optimize: let libpcap's optimizer shorten the program.

    Returns:
        The compiled program.

    Raises:
        FilterError: libpcap rejects the expression (its message and the expression are included).
        CloudtapError: libpcap cannot be loaded.
    """
    raw = compile_to_instructions(expression, linktype, snaplen, optimize)
    insns = np.frombuffer(raw, dtype=BPF_INSN_DTYPE).copy()
    return BpfProgram(expression=expression, linktype=int(linktype), snaplen=int(snaplen), instructions=insns)


_ENCAP_WORDS = re.compile(r"\b(vlan|mpls|pppoes|geneve)\b")


def vlan_aware(expression: str) -> str:
    """``E or (vlan and (E))``: ``E`` on untagged and on 802.1Q-tagged frames alike.

    libpcap reads ``host``/``port`` at untagged offsets, so ``host 10.0.0.1`` matches nothing on a
    VLAN trunk; users of a packet store rarely know (or care) whether a VM port is tagged. An
    expression that already says ``vlan`` (or another encapsulation keyword) is left as written.
    """
    text = expression.strip()
    if not text or _ENCAP_WORDS.search(text):
        return text
    return f"({text}) or (vlan and ({text}))"


class FrameFilter:
    """Applies one expression to batches of frames of any link types, counting verdicts.

    Programs are compiled lazily per link type and cached. An expression that is None or blank
    accepts every frame without running a program. A syntax error is raised at construction.

    Attributes:
        matched: frames accepted so far.
        rejected: frames rejected so far.
    """

    def __init__(self, expression: str | None, snaplen: int = DEFAULT_SNAPLEN) -> None:
        self.expression = expression if expression and expression.strip() else None
        self.snaplen = int(snaplen)
        self.matched = 0
        self.rejected = 0
        self._programs: dict[int, BpfProgram] = {}
        if self.expression is not None:
            try:
                self._programs[_EN10MB] = compile_filter(self.expression, _EN10MB, self.snaplen)
            except FilterError as exc:
                if "syntax error" in str(exc):
                    raise
                # valid grammar that Ethernet cannot express: compile per link type later

    def program(self, linktype: int) -> BpfProgram | None:
        """The compiled program for ``linktype`` (None when the filter accepts everything)."""
        if self.expression is None:
            return None
        return self._compiled(self.expression, int(linktype))

    def _compiled(self, expression: str, linktype: int) -> BpfProgram:
        prog = self._programs.get(linktype)
        if prog is None:
            prog = compile_filter(expression, linktype, self.snaplen)
            self._programs[linktype] = prog
        return prog

    def mask(self, frames: FrameBatch) -> np.ndarray:
        """Verdicts for every frame of ``frames``.

        Args:
            frames: any batch; frames of different link types get their own program.

        Returns:
            ``bool[n]``, True where the frame passes the filter.

        Raises:
            FilterError: the expression cannot be compiled for a link type present in the batch.
        """
        n = len(frames)
        expr = self.expression
        if expr is None:
            self.matched += n
            return np.ones(n, np.bool_)
        out = np.zeros(n, np.bool_)
        if n == 0:
            return out
        lts = frames.linktype
        first = int(lts[0])
        if bool((lts == first).all()):
            out = self._compiled(expr, first).match(frames)
            hits = int(np.count_nonzero(out))
        else:
            hits = 0
            for lt in np.unique(lts).tolist():
                index = np.flatnonzero(lts == lt)
                hits += self._compiled(expr, int(lt))._match_into(frames, index, out)
        self.matched += hits
        self.rejected += n - hits
        return out

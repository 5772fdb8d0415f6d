"""Numba classic-BPF virtual machine: runs one filter program over every frame of a batch.

Semantics follow libpcap's userland interpreter (``bpf_filter.c``), which is what tcpdump applies
when it reads a file, and which agrees with the Linux kernel on every program libpcap emits:

* ``A``, ``X`` and the 16 scratch words are unsigned 32-bit; arithmetic wraps.
* a packet load outside ``cap_len`` bytes, a division or modulo by zero, an unknown opcode or a
  jump out of the program make the program return 0 (reject);
* ``len`` is the on-the-wire length; shifts by 32 or more give 0;
* ``ja`` with a negative offset (libpcap's ``ip6 protochain`` loop, which advances at least 8 bytes
  into the packet per turn) is followed at most ``MAX_BACKWARD_JUMPS + cap_len`` times per packet,
  so every program terminates; libpcap 1.10 sets no bound (newer libpcap stops after 64, which
  rejects long IPv6 extension header chains that 1.10 and this VM accept).

Linux ancillary loads (``k`` at or above ``SKF_AD_OFF`` as unsigned) fall outside any packet and
reject, as in an offline interpreter. Values are held in ``int64`` and masked to 32 bits.

Besides the verdict, the VM can report per frame the value returned (what a socket would keep of the
frame, the kept length) and which ``ret`` instruction returned it (which part of a chained program).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from cloudtap._kernel_opts import KERNEL_OPTS

MASK32 = 0xFFFFFFFF
MEMWORDS = 16
MAX_BACKWARD_JUMPS = 64

# Opcodes (class | size/op | mode/src), as in <pcap/bpf.h>.
RET_K = 0x06
RET_A = 0x16
LD_W_ABS = 0x20
LD_H_ABS = 0x28
LD_B_ABS = 0x30
LD_W_LEN = 0x80
LD_W_IND = 0x40
LD_H_IND = 0x48
LD_B_IND = 0x50
LD_IMM = 0x00
LD_MEM = 0x60
LDX_IMM = 0x01
LDX_MEM = 0x61
LDX_W_LEN = 0x81
LDX_MSH_B = 0xB1
ST = 0x02
STX = 0x03
JA = 0x05
JGT_K = 0x25
JGE_K = 0x35
JEQ_K = 0x15
JSET_K = 0x45
JGT_X = 0x2D
JGE_X = 0x3D
JEQ_X = 0x1D
JSET_X = 0x4D
ADD_K = 0x04
SUB_K = 0x14
MUL_K = 0x24
DIV_K = 0x34
OR_K = 0x44
AND_K = 0x54
LSH_K = 0x64
RSH_K = 0x74
MOD_K = 0x94
XOR_K = 0xA4
ADD_X = 0x0C
SUB_X = 0x1C
MUL_X = 0x2C
DIV_X = 0x3C
OR_X = 0x4C
AND_X = 0x5C
LSH_X = 0x6C
RSH_X = 0x7C
MOD_X = 0x9C
XOR_X = 0xAC
NEG = 0x84
TAX = 0x07
TXA = 0x87

ALL_OPCODES = frozenset(
    (
        RET_K,
        RET_A,
        LD_W_ABS,
        LD_H_ABS,
        LD_B_ABS,
        LD_W_LEN,
        LD_W_IND,
        LD_H_IND,
        LD_B_IND,
        LD_IMM,
        LD_MEM,
        LDX_IMM,
        LDX_MEM,
        LDX_W_LEN,
        LDX_MSH_B,
        ST,
        STX,
        JA,
        JGT_K,
        JGE_K,
        JEQ_K,
        JSET_K,
        JGT_X,
        JGE_X,
        JEQ_X,
        JSET_X,
        ADD_K,
        SUB_K,
        MUL_K,
        DIV_K,
        OR_K,
        AND_K,
        LSH_K,
        RSH_K,
        MOD_K,
        XOR_K,
        ADD_X,
        SUB_X,
        MUL_X,
        DIV_X,
        OR_X,
        AND_X,
        LSH_X,
        RSH_X,
        MOD_X,
        XOR_X,
        NEG,
        TAX,
        TXA,
    )
)


@njit(**KERNEL_OPTS)
def _alu(op: int, a: int, v: int) -> int:
    """Apply ALU operation ``op`` (the BPF_OP bits) to ``a`` and operand ``v``; -1 means reject."""
    if op == 0x00:
        return (a + v) & MASK32
    if op == 0x50:
        return a & v
    if op == 0x40:
        return a | v
    if op == 0x10:
        return (a - v) & MASK32
    if op == 0x20:
        return (a * v) & MASK32
    if op == 0x30:
        if v == 0:
            return -1
        return a // v
    if op == 0x90:
        if v == 0:
            return -1
        return a % v
    if op == 0xA0:
        return a ^ v
    if op == 0x60:
        if v >= 32:
            return 0
        return (a << v) & MASK32
    if op == 0x70:
        if v >= 32:
            return 0
        return a >> v
    if op == 0x80:  # NEG
        return (-a) & MASK32
    return -1


@njit(**KERNEL_OPTS)
def run_batch(
    code: np.ndarray,
    jt: np.ndarray,
    jf: np.ndarray,
    k: np.ndarray,
    data: np.ndarray,
    offset: np.ndarray,
    cap_len: np.ndarray,
    wire_len: np.ndarray,
    index: np.ndarray,
    use_index: bool,
    out: np.ndarray,
    rets: np.ndarray,
    ret_pc: np.ndarray,
) -> int:
    """Run one program over frames of a batch, writing verdicts into ``out``.

    The whole interpreter lives in this one loop, dispatching on the raw opcode with the opcodes
    libpcap emits most first; calls per instruction would cost more than the instruction.

    Args:
        code, jt, jf, k: ``int64`` instruction fields (``k`` unsigned 32-bit).
        data: ``uint8`` buffer; frame ``i`` is ``data[offset[i]:offset[i] + cap_len[i]]``.
        offset, cap_len, wire_len: per-frame arrays of the batch.
        index: frames to run when ``use_index`` (others keep their ``out`` value).
        use_index: run ``index`` only instead of every frame.
        out: ``bool[n]`` verdicts (True = the program returned non-zero).
        rets: ``uint32[n]``, the value returned (the bytes the kernel would keep; 0 = reject), or empty
            to skip writing it.
        ret_pc: ``int32[n]``, the index of the ``ret`` instruction that returned (-1 when a fault
            rejected the frame: a load out of bounds, a division by zero...), or empty to skip it.

    Returns:
        The number of frames accepted.
    """
    n = code.shape[0]
    mem = np.zeros(MEMWORDS, np.int64)
    dirty = False
    hits = 0
    count = index.shape[0] if use_index else offset.shape[0]
    want_rets = rets.shape[0] > 0
    want_pc = ret_pc.shape[0] > 0
    for j in range(count):
        i = index[j] if use_index else j
        base = np.int64(offset[i])
        buflen = np.int64(cap_len[i])
        if dirty:
            for w in range(MEMWORDS):
                mem[w] = 0
            dirty = False
        a = 0
        x = 0
        pc = 0
        ret = 0
        backward = 0
        at = -1
        while pc < n:
            c = code[pc]
            kk = k[pc]
            if c == LD_H_ABS:
                if kk + 2 > buflen:
                    break
                p = base + kk
                a = (np.int64(data[p]) << 8) | np.int64(data[p + 1])
                pc += 1
            elif c == JEQ_K:
                pc += 1 + (jt[pc] if a == kk else jf[pc])
            elif c == LD_B_ABS:
                if kk >= buflen:
                    break
                a = np.int64(data[base + kk])
                pc += 1
            elif c == RET_K:
                ret = kk
                at = pc
                break
            elif c == JSET_K:
                pc += 1 + (jt[pc] if (a & kk) != 0 else jf[pc])
            elif c == LDX_MSH_B:
                if kk >= buflen:
                    break
                x = (np.int64(data[base + kk]) & 0x0F) << 2
                pc += 1
            elif c == LD_H_IND:
                off = kk + x
                if off + 2 > buflen:
                    break
                p = base + off
                a = (np.int64(data[p]) << 8) | np.int64(data[p + 1])
                pc += 1
            elif c == LD_B_IND:
                off = kk + x
                if off >= buflen:
                    break
                a = np.int64(data[base + off])
                pc += 1
            elif c == LD_W_ABS or c == LD_W_IND:
                off = kk + x if c == LD_W_IND else kk
                if off + 4 > buflen:
                    break
                p = base + off
                a = (
                    (np.int64(data[p]) << 24)
                    | (np.int64(data[p + 1]) << 16)
                    | (np.int64(data[p + 2]) << 8)
                    | np.int64(data[p + 3])
                )
                pc += 1
            elif c == JGT_K:
                pc += 1 + (jt[pc] if a > kk else jf[pc])
            elif c == JGE_K:
                pc += 1 + (jt[pc] if a >= kk else jf[pc])
            elif c == AND_K:
                a &= kk
                pc += 1
            elif c == RET_A:
                ret = a
                at = pc
                break
            elif c == JA:
                off = kk - 0x100000000 if kk >= 0x80000000 else kk
                if off < 0:
                    if off == -1 or backward >= MAX_BACKWARD_JUMPS + buflen:
                        break
                    backward += 1
                pc += 1 + off
                if pc < 0:
                    break
            elif c == TAX:
                x = a
                pc += 1
            elif c == TXA:
                a = x
                pc += 1
            elif c == ST:
                mem[kk & 0x0F] = a
                dirty = True
                pc += 1
            elif c == STX:
                mem[kk & 0x0F] = x
                dirty = True
                pc += 1
            elif c == LD_MEM:
                a = mem[kk & 0x0F]
                pc += 1
            elif c == LDX_MEM:
                x = mem[kk & 0x0F]
                pc += 1
            elif c == LD_IMM:
                a = kk
                pc += 1
            elif c == LDX_IMM:
                x = kk
                pc += 1
            elif c == LD_W_LEN:
                a = np.int64(wire_len[i])
                pc += 1
            elif c == LDX_W_LEN:
                x = np.int64(wire_len[i])
                pc += 1
            elif c == JEQ_X:
                pc += 1 + (jt[pc] if a == x else jf[pc])
            elif c == JGT_X:
                pc += 1 + (jt[pc] if a > x else jf[pc])
            elif c == JGE_X:
                pc += 1 + (jt[pc] if a >= x else jf[pc])
            elif c == JSET_X:
                pc += 1 + (jt[pc] if (a & x) != 0 else jf[pc])
            elif (c & 0x07) == 0x04 and c != 0x8C and c <= 0xAC:  # ALU (BPF_NEG|BPF_X is not valid)
                r = _alu(c & 0xF0, a, x if (c & 0x08) != 0 else kk)
                if r < 0:
                    break
                a = r
                pc += 1
            else:
                break  # unknown opcode: reject
        ok = ret != 0
        out[i] = ok
        hits += ok
        if want_rets:
            rets[i] = ret
        if want_pc:
            ret_pc[i] = at
    return hits

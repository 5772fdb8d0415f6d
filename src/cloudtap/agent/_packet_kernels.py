"""Numba kernels of the agent's packet store: gather frames into blocks, index blocks.

Private: imports only numpy, numba and schema constants. The index of a block is a bloom filter of
``BLOOM_BITS`` bits over the keys a tcpdump filter can require (addresses, ports, symmetric flow
hash), a 256-bit set of interface ids, and flags telling when the keys are not a complete view of the
block (non-IP or undecoded frames, tunnels).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from cloudtap._kernel_opts import NO_ALLOC_OPTS
from cloudtap.schema.packet import STATUS_OK

BLOOM_WORDS = 128  #: 8192 bits per block
BLOOM_BITS = BLOOM_WORDS * 64
IFACE_WORDS = 4  #: interface ids modulo 256

BF_NON_IP = 1  #: a frame without a fully decoded IP header (ARP, truncated, malformed...)
BF_TUNNEL = 2  #: a tunnelled frame (its outer L4 ports are not indexed)
BF_DEEP_TUNNEL = 4  #: a frame with more than one tunnel level (middle addresses not indexed)

TAG_ADDR = np.uint64(0x9E3779B97F4A7C15)
TAG_PORT = np.uint64(0xC2B2AE3D27D4EB4F)
TAG_FLOW = np.uint64(0x165667B19E3779F9)


@njit(**NO_ALLOC_OPTS)
def mix64(x):  # type: ignore[no-untyped-def]
    """splitmix64 finaliser."""
    x = np.uint64(x)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


@njit(**NO_ALLOC_OPTS)
def addr_key(hi, lo):  # type: ignore[no-untyped-def]
    """Bloom key of one IP address (IPv4 mapped)."""
    return mix64(mix64(np.uint64(hi) ^ TAG_ADDR) ^ np.uint64(lo))


@njit(**NO_ALLOC_OPTS)
def port_key(port):  # type: ignore[no-untyped-def]
    """Bloom key of one L4 port."""
    return mix64(np.uint64(port) ^ TAG_PORT)


@njit(**NO_ALLOC_OPTS)
def flow_key(a_hi, a_lo, a_port, b_hi, b_lo, b_port, proto):  # type: ignore[no-untyped-def]
    """Symmetric flow hash: both directions of a flow give the same key."""
    ka = mix64(addr_key(a_hi, a_lo) ^ np.uint64(a_port))
    kb = mix64(addr_key(b_hi, b_lo) ^ np.uint64(b_port))
    return mix64((ka + kb) ^ (ka * kb) ^ np.uint64(proto) ^ TAG_FLOW)


@njit(**NO_ALLOC_OPTS)
def _set(bloom, key):  # type: ignore[no-untyped-def]
    for shift in (0, 21, 42):
        bit = (key >> np.uint64(shift)) & np.uint64(BLOOM_BITS - 1)
        bloom[bit >> np.uint64(6)] |= np.uint64(1) << (bit & np.uint64(63))


@njit(**NO_ALLOC_OPTS)
def bloom_has(bloom, key):  # type: ignore[no-untyped-def]
    """True when ``key`` may be in ``bloom`` (false positives only)."""
    for shift in (0, 21, 42):
        bit = (key >> np.uint64(shift)) & np.uint64(BLOOM_BITS - 1)
        if (bloom[bit >> np.uint64(6)] >> (bit & np.uint64(63))) & np.uint64(1) == 0:
            return False
    return True


@njit(**NO_ALLOC_OPTS)
def index_packets(packets, sel, bloom, ifaces, store_ids):  # type: ignore[no-untyped-def]
    """Add the keys of ``packets[sel]`` to ``bloom`` and their store interface ids to ``ifaces``.

    Returns:
        The ``BF_*`` flags of these packets.
    """
    flags = 0
    for j in range(sel.shape[0]):
        p = packets[sel[j]]
        sid = store_ids[j]
        ifaces[(sid >> 6) & (IFACE_WORDS - 1)] |= np.uint64(1) << np.uint64(sid & 63)
        if p.status != STATUS_OK or p.ip_ver == 0:
            flags |= BF_NON_IP
            if p.ip_ver == 0:
                continue
        if p.tunnel_depth > 0:
            flags |= BF_TUNNEL
            if p.tunnel_depth > 1:
                flags |= BF_DEEP_TUNNEL
            _set(bloom, addr_key(p.tunnel_src_hi, p.tunnel_src_lo))
            _set(bloom, addr_key(p.tunnel_dst_hi, p.tunnel_dst_lo))
        _set(bloom, addr_key(p.src_hi, p.src_lo))
        _set(bloom, addr_key(p.dst_hi, p.dst_lo))
        _set(bloom, port_key(p.sport))
        _set(bloom, port_key(p.dport))
        _set(bloom, flow_key(p.src_hi, p.src_lo, p.sport, p.dst_hi, p.dst_lo, p.dport, p.proto))
    return flags


@njit(**NO_ALLOC_OPTS)
def gather(src, src_off, cap_len, sel, snaplen, out, out_pos, out_cap):  # type: ignore[no-untyped-def]
    """Copy frames ``sel`` of ``src`` (cut at ``snaplen``) contiguously into ``out`` from ``out_pos``.

    Stops before the first frame that does not fit; writes each copied frame's kept length to
    ``out_cap``.

    Returns:
        ``(frames copied, new out_pos)``.
    """
    pos = out_pos
    cap = out.shape[0]
    for j in range(sel.shape[0]):
        i = sel[j]
        n = cap_len[i]
        if n > snaplen:
            n = snaplen
        if pos + n > cap:
            return j, pos
        s = src_off[i]
        for b in range(n):
            out[pos + b] = src[s + b]
        out_cap[j] = n
        pos += n
    return sel.shape[0], pos


@njit(**NO_ALLOC_OPTS)
def select_rows(ts, iface, from_ns, to_ns, iface_ok, out):  # type: ignore[no-untyped-def]
    """Indices of rows with ``from_ns <= ts < to_ns`` and ``iface_ok[iface]``; returns how many."""
    k = 0
    for i in range(ts.shape[0]):
        t = ts[i]
        if t >= from_ns and t < to_ns and iface_ok[iface[i]]:
            out[k] = i
            k += 1
    return k


@njit(**NO_ALLOC_OPTS)
def candidate_blocks(min_ts, max_ts, ifaces, blooms, flags, from_ns, to_ns, want_ifaces, addr_keys, port_keys, out):  # type: ignore[no-untyped-def]  # noqa: E501
    """Indices of blocks that may hold a packet of the query; returns how many.

    A block is skipped when its time range misses ``[from_ns, to_ns)``, it holds none of the wanted
    interfaces, or (only where its keys are a complete view of it) a required address or port is
    absent from its bloom filter.
    """
    k = 0
    for b in range(min_ts.shape[0]):
        if max_ts[b] < from_ns or min_ts[b] >= to_ns:
            continue
        hit = False
        for w in range(IFACE_WORDS):
            if ifaces[b, w] & want_ifaces[w]:
                hit = True
                break
        if not hit:
            continue
        f = flags[b]
        ok = True
        if (f & (BF_NON_IP | BF_DEEP_TUNNEL)) == 0:
            for a in range(addr_keys.shape[0]):
                if not bloom_has(blooms[b], addr_keys[a]):
                    ok = False
                    break
        if ok and (f & (BF_NON_IP | BF_TUNNEL)) == 0:
            for p in range(port_keys.shape[0]):
                if not bloom_has(blooms[b], port_keys[p]):
                    ok = False
                    break
        if ok:
            out[k] = b
            k += 1
    return k

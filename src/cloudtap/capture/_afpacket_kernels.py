"""numba kernels that walk TPACKET_V3 ring blocks (see ``afpacket``).

Every ring lives at ``base[r]`` bytes into one mapped region, as ``block_count`` blocks of
``block_size`` bytes. The region is seen twice: ``v8`` (``uint8``) and ``v32`` (``uint32``, the same
memory; every header field used here is 4-byte aligned). Values are read in host byte order, as the
kernel writes them (little-endian hosts assumed, as everywhere in cloudtap).

``struct tpacket_block_desc`` (48 bytes) starts each block: ``block_status`` at +8, ``num_pkts`` at
+12, ``offset_to_first_pkt`` at +16. ``struct tpacket3_hdr`` starts each frame: ``tp_next_offset``
+0, ``tp_sec`` +4, ``tp_nsec`` +8, ``tp_snaplen`` +12, ``tp_len`` +16, ``tp_status`` +20, ``tp_mac``
(u16) +24, ``hv1.tp_vlan_tci`` +32, ``hv1.tp_vlan_tpid`` (u16) +36; a ``struct sockaddr_ll`` (20
bytes) follows at +48 and the frame starts at ``tp_mac``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from cloudtap._kernel_opts import KERNEL_OPTS

TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
TP_STATUS_VLAN_VALID = 0x10
TP_STATUS_VLAN_TPID_VALID = 0x40

BLK_STATUS = 8
BLK_NUM_PKTS = 12
BLK_FIRST = 16

#: first byte after ``tpacket3_hdr`` + ``sockaddr_ll``: bytes from here to ``tp_mac`` are free padding
FRAME_GAP_START = 48 + 20
VLAN_TAG_LEN = 4
ETH_ADDRS_LEN = 12
ETH_P_8021Q = 0x8100
LINKTYPE_ETHERNET = 1


@njit(**KERNEL_OPTS)
def ready_blocks(
    v32: np.ndarray,
    base: np.ndarray,
    cursor: np.ndarray,
    block_size: int,
    block_count: int,
    max_take: int,
    take: np.ndarray,
    frames: np.ndarray,
) -> int:
    """Count the consecutive user-owned blocks of every ring, from its cursor.

    Args:
        v32: the region as ``uint32``.
        base: ``int64[r]``, byte offset of each ring in the region.
        cursor: ``int64[r]``, next block to read in each ring.
        block_size: bytes per block.
        block_count: blocks per ring.
        max_take: at most this many blocks per ring.
        take: ``int64[r]`` out, ready blocks taken per ring.
        frames: ``int64[r]`` out, frames in those blocks.

    Returns:
        Total frames in the taken blocks.
    """
    total = 0
    for r in range(base.shape[0]):
        b = cursor[r]
        n = 0
        f = 0
        while n < max_take:
            blk = base[r] + b * block_size
            if (v32[(blk + BLK_STATUS) >> 2] & TP_STATUS_USER) == 0:
                break
            f += v32[(blk + BLK_NUM_PKTS) >> 2]
            n += 1
            b += 1
            if b == block_count:
                b = 0
        take[r] = n
        frames[r] = f
        total += f
    return total


@njit(**KERNEL_OPTS)
def walk_blocks(
    v8: np.ndarray,
    v32: np.ndarray,
    base: np.ndarray,
    cursor: np.ndarray,
    take: np.ndarray,
    block_size: int,
    block_count: int,
    ring_iface: np.ndarray,
    ring_linktype: np.ndarray,
    offset: np.ndarray,
    cap_len: np.ndarray,
    wire_len: np.ndarray,
    ts_ns: np.ndarray,
    linktype: np.ndarray,
    interface: np.ndarray,
    ring_bytes: np.ndarray,
    ring_vlan: np.ndarray,
) -> int:
    """Describe every frame of the taken blocks in the output arrays.

    A VLAN tag the kernel moved out of an Ethernet frame (``TP_STATUS_VLAN_VALID``) is put back in
    place: the 12 address bytes move 4 bytes down into the free padding before ``tp_mac`` and the tag
    is written after them, so ``cap_len`` and ``wire_len`` grow by 4. Frames without room (never seen
    with the kernel's layout) keep the tag stripped.

    Args:
        v8: the region as ``uint8`` (written only for VLAN tags).
        v32: the region as ``uint32``.
        base, cursor, take: per ring, as for ``ready_blocks``.
        block_size: bytes per block.
        block_count: blocks per ring.
        ring_iface: ``uint16[r]``, interface index of each ring's frames.
        ring_linktype: ``uint16[r]``, pcap link type of each ring.
        offset, cap_len, wire_len, ts_ns, linktype, interface: per-frame outputs (FrameBatch columns).
        ring_bytes: ``int64[r]`` out, wire bytes per ring.
        ring_vlan: ``int64[r]`` out, VLAN tags re-inserted per ring.

    Returns:
        Frames written.
    """
    cap = offset.shape[0]
    i = 0
    for r in range(base.shape[0]):
        b = cursor[r]
        nbytes = 0
        nvlan = 0
        lt = ring_linktype[r]
        itf = ring_iface[r]
        for _ in range(take[r]):
            blk = base[r] + b * block_size
            blk_end = blk + block_size
            npk = v32[(blk + BLK_NUM_PKTS) >> 2]
            pos = blk + v32[(blk + BLK_FIRST) >> 2]
            for _ in range(npk):
                if i >= cap or pos + FRAME_GAP_START > blk_end:
                    break
                h = pos >> 2
                nxt = v32[h]
                snap = v32[h + 3]
                ln = v32[h + 4]
                st = v32[h + 5]
                mac = v32[h + 6] & 0xFFFF
                o = pos + mac
                if (
                    (st & TP_STATUS_VLAN_VALID) != 0
                    and lt == LINKTYPE_ETHERNET
                    and snap >= ETH_ADDRS_LEN
                    and mac >= FRAME_GAP_START + VLAN_TAG_LEN
                ):
                    tci = v32[h + 8] & 0xFFFF
                    tpid = ETH_P_8021Q
                    if (st & TP_STATUS_VLAN_TPID_VALID) != 0 and (v32[h + 9] & 0xFFFF) != 0:
                        tpid = v32[h + 9] & 0xFFFF
                    for k in range(ETH_ADDRS_LEN):
                        v8[o - VLAN_TAG_LEN + k] = v8[o + k]
                    o -= VLAN_TAG_LEN
                    v8[o + 12] = tpid >> 8
                    v8[o + 13] = tpid & 0xFF
                    v8[o + 14] = tci >> 8
                    v8[o + 15] = tci & 0xFF
                    snap += VLAN_TAG_LEN
                    ln += VLAN_TAG_LEN
                    nvlan += 1
                offset[i] = o
                cap_len[i] = snap
                wire_len[i] = ln
                ts_ns[i] = np.int64(v32[h + 1]) * 1_000_000_000 + np.int64(v32[h + 2])
                linktype[i] = lt
                interface[i] = itf
                nbytes += ln
                i += 1
                pos += nxt
            b += 1
            if b == block_count:
                b = 0
        ring_bytes[r] = nbytes
        ring_vlan[r] = nvlan
    return i


@njit(**KERNEL_OPTS)
def release_blocks(
    v32: np.ndarray, base: int, start: int, count: int, block_size: int, block_count: int
) -> None:
    """Hand ``count`` blocks of one ring, from block ``start``, back to the kernel."""
    b = start
    for _ in range(count):
        v32[(base + b * block_size + BLK_STATUS) >> 2] = TP_STATUS_KERNEL
        b += 1
        if b == block_count:
            b = 0

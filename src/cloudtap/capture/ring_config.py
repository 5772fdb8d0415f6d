"""RingConfig: the shape of an AF_PACKET TPACKET_V3 ring, its snap length, kernel filter and fanout."""

from __future__ import annotations

import mmap
from dataclasses import dataclass

from cloudtap.errors import ConfigError

TPACKET3_HDRLEN = 68  #: TPACKET_ALIGN(sizeof(struct tpacket3_hdr)) + sizeof(struct sockaddr_ll)

FANOUT_MODES = {"hash": 0, "lb": 1, "cpu": 2, "rollover": 3, "rnd": 4, "random": 4, "qm": 5}
"""``fanout_mode`` names and their ``PACKET_FANOUT_*`` values."""

_PAGE = mmap.PAGESIZE


@dataclass(frozen=True)
class RingConfig:
    """Shape of each interface's TPACKET_V3 ring and what goes into it.

    Attributes:
        block_size: bytes per ring block (a multiple of the page size; a power of two wastes nothing).
        block_count: blocks per ring (ring memory = ``block_size * block_count`` per interface).
        frame_size: ``tp_frame_size`` (a multiple of 16 dividing ``block_size``; V3 frames are
            variable-sized, this only satisfies the kernel's ring arithmetic).
        snaplen: bytes kept of each frame (headers only by default).
        block_timeout_ms: a partly filled block is handed over after this long (0: kernel default).
        fanout_group: join a ``PACKET_FANOUT`` group (see ``cloudtap.capture.afpacket``); None for no fanout.
        fanout_mode: one of ``FANOUT_MODES``.
        bpf: tcpdump-syntax filter run in the kernel; None keeps everything.
        read_blocks: most blocks taken from each ring per ``read()``; None for a quarter of the ring.
    """

    block_size: int = 1 << 20
    block_count: int = 64
    frame_size: int = 2048
    snaplen: int = 256
    block_timeout_ms: int = 10
    fanout_group: int | None = None
    fanout_mode: str = "hash"
    bpf: str | None = None
    read_blocks: int | None = None

    def __post_init__(self) -> None:
        if self.block_size <= 0 or self.block_size % _PAGE:
            raise ConfigError(f"block_size {self.block_size} must be a positive multiple of {_PAGE}")
        if self.block_count < 2:
            raise ConfigError(f"block_count must be >= 2, got {self.block_count}")
        if self.frame_size < TPACKET3_HDRLEN or self.frame_size % 16 or self.block_size % self.frame_size:
            raise ConfigError(
                f"frame_size {self.frame_size} must be a multiple of 16, >= {TPACKET3_HDRLEN}, "
                f"dividing block_size {self.block_size}"
            )
        if not 1 <= self.snaplen <= 0xFFFF_FFFF:
            raise ConfigError(f"snaplen must be >= 1, got {self.snaplen}")
        if not 0 <= self.block_timeout_ms <= 0xFFFF_FFFF:
            raise ConfigError(f"block_timeout_ms must be >= 0, got {self.block_timeout_ms}")
        if self.fanout_group is not None and not 0 <= self.fanout_group <= 0xFFFF:
            raise ConfigError(f"fanout_group must be in 0..65535, got {self.fanout_group}")
        if self.fanout_mode not in FANOUT_MODES:
            raise ConfigError(f"fanout_mode {self.fanout_mode!r} is not one of {sorted(FANOUT_MODES)}")
        if self.read_blocks is not None and self.read_blocks < 1:
            raise ConfigError(f"read_blocks must be >= 1, got {self.read_blocks}")

    @property
    def ring_bytes(self) -> int:
        """Memory of one ring."""
        return self.block_size * self.block_count

    @property
    def blocks_per_read(self) -> int:
        """Most blocks taken from one ring per read."""
        return self.read_blocks if self.read_blocks is not None else max(1, self.block_count // 4)

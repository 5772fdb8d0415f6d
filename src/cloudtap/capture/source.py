"""PacketSource: what every live or replayed packet source offers the agent.

Sources: ``afpacket.AfPacketSource`` (TPACKET_V3 ring on one or more interfaces),
``mirror.MirrorSource`` (ERSPAN/GRE/VXLAN mirrored traffic on a socket), ``replay.ReplaySource``
(a capture file at recorded speed or as fast as possible). A source hands out whole batches of frames;
it never calls back per packet.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from cloudtap.capture.frames import FrameBatch


@dataclass
class SourceStats:
    """Counters of one source (cumulative since it was opened).

    ``per_interface`` maps an interface name to its own counters with the same keys as the totals
    (``packets``, ``bytes``, ``kernel_drops``, ``filter_drops``...).
    """

    packets: int = 0  #: frames handed out
    bytes: int = 0  #: wire bytes of those frames
    kernel_drops: int = 0  #: PACKET_STATISTICS tp_drops (ring full)
    filter_drops: int = 0  #: frames rejected by the capture filter, where the source can know it
    duplicates: int = 0  #: mirrored copies dropped by dedup
    errors: int = 0  #: frames that could not be handed out (malformed encapsulation...)
    per_interface: dict[str, dict[str, int]] = field(default_factory=dict)


@runtime_checkable
class PacketSource(Protocol):
    """A source of frame batches."""

    def read(self, timeout_s: float = 0.1) -> FrameBatch | None:
        """The next batch, or None when nothing arrived within ``timeout_s``.

        Raises ``EOFError`` when a finite source (a replay) is exhausted. The batch's buffer is valid
        until the next ``read`` call (live sources reuse their ring): copy what must outlive it.
        """
        ...

    def stats(self) -> SourceStats:
        """Counters so far."""
        ...

    def close(self) -> None:
        """Release sockets, rings and files; idempotent."""
        ...

"""PolicySource: live AF_PACKET capture whose sockets carry a PolicyFilter's program (per-policy snap lengths).

An :class:`~cloudtap.capture.afpacket.AfPacketSource` compiles ``RingConfig.bpf`` for each socket; this
source attaches :meth:`PolicyFilter.kernel_program` instead, so the kernel keeps each packet up to the snap
length of the policy that accepted it (docs/controller.md, "Payload per policy"). ``set_policy_filter``
swaps the program on every open socket at once (a controller's new policies), or goes back to
``RingConfig.bpf`` with None. Rings need no resizing: TPACKET_V3 frames are variable-sized within a block.
"""

from __future__ import annotations

from collections.abc import Sequence

from cloudtap.capture.afpacket import AfPacketSource, RingConfig
from cloudtap.capture.bpf import BpfProgram
from cloudtap.capture.packet_socket import attach_filter, capture_error
from cloudtap.capture.policy_filter import PolicyFilter


class PolicySource(AfPacketSource):
    """An AfPacketSource filtering with a :class:`PolicyFilter` (None: with ``config.bpf``, as its parent)."""

    def __init__(
        self, interfaces: Sequence[str], config: RingConfig, policy_filter: PolicyFilter | None = None
    ) -> None:
        """Open one ring per interface, each socket filtered by ``policy_filter``'s kernel program.

        Raises:
            CaptureError, FilterError: as :class:`AfPacketSource`.
        """
        self.policy_filter = policy_filter
        super().__init__(interfaces, config)

    def _program(self, linktype: int) -> BpfProgram:
        if self.policy_filter is None:
            return super()._program(linktype)
        return self.policy_filter.kernel_program(linktype)  # compiled once per link type by the filter

    def set_policy_filter(self, policy_filter: PolicyFilter | None) -> None:
        """Filter every open socket (and those added later) with ``policy_filter`` from now on.

        Raises:
            FilterError: the filter cannot be compiled for the link type of an open interface (nothing
                changed then).
            CaptureError: the source is closed, or the kernel refuses the program on a socket.
        """
        linktypes = {ring.linktype for ring in list(self._rings)}
        if policy_filter is not None:
            for linktype in linktypes:
                policy_filter.kernel_program(linktype)  # compile before anything changes
        with self._lock:
            self._check_open()
            self.policy_filter = policy_filter
            self._programs.clear()
            for ring in self._rings:
                if ring.retiring:
                    continue
                try:
                    attach_filter(ring.sock, self._program(ring.linktype))
                except OSError as exc:
                    raise capture_error(ring.name, exc) from exc

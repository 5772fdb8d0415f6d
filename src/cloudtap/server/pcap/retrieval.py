"""One PCAP retrieval: resolve the targets, fetch from the agents, merge, enforce the size cap."""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from cloudtap.server.pcap.errors import PcapNotFound, PcapRequestError, PcapTooLarge
from cloudtap.server.pcap.fetch import FetchProgress, fetch_all
from cloudtap.server.pcap.merge import MergedCapture
from cloudtap.server.pcap.targets import PcapTargets, Target


@dataclass
class PcapRequest:
    """What to retrieve: a VM (resolved through the inventory) or explicit targets, a window, a filter."""

    from_ns: int
    to_ns: int
    vm: str | None = None
    targets: list[Target] = field(default_factory=list)
    bpf: str | None = None
    max_bytes: int = 1 << 30

    def resolve(self, inventory: PcapTargets | None) -> list[Target]:
        """The targets to ask: the explicit ones, else those of ``vm`` from the inventory.

        Raises:
            PcapRequestError: bad window, neither ``vm`` nor targets, no inventory, or no agent saw the VM.
        """
        if self.to_ns <= self.from_ns:
            raise PcapRequestError(f"the window is empty: to ({self.to_ns}) must be after from ({self.from_ns})")
        if self.targets:
            return list(self.targets)
        if not self.vm:
            raise PcapRequestError("give a vm or explicit targets")
        if inventory is None:
            raise PcapRequestError(f"no inventory: cannot find where VM {self.vm!r} was captured; give explicit targets")
        targets = inventory.for_vm(self.vm, self.from_ns, self.to_ns)
        if not targets:
            raise PcapNotFound(f"no agent captured VM {self.vm!r} in this window")
        return targets


async def retrieve(
    request: PcapRequest,
    inventory: PcapTargets | None = None,
    spool: Path | None = None,
    timeout_s: float = 60.0,
    progress: FetchProgress | None = None,
) -> MergedCapture:
    """Fetch the request's packets from every agent concurrently and merge them by time.

    Returns:
        The merged capture (the caller streams it, then closes it).

    Raises:
        PcapRequestError: see :meth:`PcapRequest.resolve`.
        PcapTooLarge: the packets exceed ``request.max_bytes``.
        PcapAgentError: an agent failed.
    """
    targets = request.resolve(inventory)
    spool = spool or Path(tempfile.gettempdir()) / "cloudtap-pcap"
    fetched = await fetch_all(
        targets, request.from_ns, request.to_ns, request.bpf, request.max_bytes, spool, timeout_s, progress
    )
    merged = await asyncio.to_thread(MergedCapture, fetched)
    if merged.size > request.max_bytes:
        merged.close()
        raise PcapTooLarge(
            f"the merged capture is {merged.size} bytes, over max_bytes={request.max_bytes}: "
            "narrow the window or the filter",
            request.max_bytes,
            merged.size,
        )
    return merged


def retrieve_to_file(
    request: PcapRequest,
    output: Path,
    inventory: PcapTargets | None = None,
    timeout_s: float = 60.0,
    progress: FetchProgress | None = None,
) -> tuple[int, int]:
    """Retrieve in this process (no server) and write the pcapng to ``output``.

    Returns:
        ``(packets, bytes)`` written.
    """
    merged = asyncio.run(retrieve(request, inventory, output.parent, timeout_s, progress))
    try:
        with output.open("wb") as f:
            for chunk in merged.iter_bytes():
                f.write(chunk)
        return merged.packets, merged.size
    finally:
        merged.close()

"""Errors of a PCAP retrieval, each with the HTTP status the API answers."""

from __future__ import annotations

from cloudtap.errors import CloudtapError


class PcapError(CloudtapError):
    """A retrieval failed; ``status`` is the HTTP status to answer."""

    status = 500


class PcapRequestError(PcapError):
    """The request cannot be served as asked (bad window, no inventory, no target)."""

    status = 400


class PcapNotFound(PcapRequestError):
    """No agent captured the VM in the window."""

    status = 404


class PcapTooLarge(PcapError):
    """The packets exceed the size cap."""

    status = 413

    def __init__(self, message: str, limit: int, needed: int | None = None) -> None:
        super().__init__(message)
        self.limit = limit
        self.needed = needed


class PcapAgentError(PcapError):
    """One or more agents did not deliver their packets."""

    status = 502

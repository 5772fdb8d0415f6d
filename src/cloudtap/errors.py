"""Every error cloudtap raises on purpose.

    CloudtapError
     ├── CaptureError            a packet source cannot go on
     │    └── CorruptCaptureError    a capture file is damaged at a known byte offset
     ├── FilterError             a BPF expression does not compile
     ├── ConfigError             a setting is missing or invalid
     └── TableFullError          (never raised by the meter: overflow is counted) reserved for callers that insist

Errors name the thing that failed (file, offset, key) so the user can act on them.
"""

from __future__ import annotations


class CloudtapError(Exception):
    """Base of all cloudtap errors."""


class CaptureError(CloudtapError):
    """A packet source cannot be opened or read."""


class CorruptCaptureError(CaptureError):
    """A capture file is damaged; frames before ``offset`` were read and are kept."""

    def __init__(self, path: str, offset: int, reason: str) -> None:
        self.path = path
        self.offset = offset
        self.reason = reason
        super().__init__(f"{path}: corrupt at byte offset {offset}: {reason}")


class FilterError(CloudtapError):
    """A tcpdump-syntax filter expression does not compile."""


class ConfigError(CloudtapError):
    """A configuration value is missing or invalid."""


class TableFullError(CloudtapError):
    """The flow table has no free slot (callers may raise it; the meter itself only counts)."""

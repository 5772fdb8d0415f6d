"""What a finding is: kind, severity, subject (names as of then), window, figures, baseline, how to reproduce.

A :class:`Detection` is what a detector reports for one minute; the engine folds detections of the same
kind and subject into one :class:`Finding` (an ongoing condition is extended, not repeated). Operators
acknowledge or mute findings (:class:`Action`); the newest action decides the finding's ``state``.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

#: Finding kinds (the names used in the CLI and API).
KINDS = (
    "new_edge", "new_port", "burst", "periodic_transfer", "scan", "handshake_failures",
    "retransmission_spike", "lb_imbalance", "isolation_crossing", "slow_requests",
)  # fmt: skip
#: Severities, least first.
SEVERITIES = ("info", "warning", "critical")
Severity = Literal["info", "warning", "critical"]
State = Literal["open", "acknowledged", "muted"]


def severity_rank(severity: str) -> int:
    """0 for info, 1 warning, 2 critical."""
    return SEVERITIES.index(severity)


class Subject(BaseModel):
    """What a finding is about: an edge (client -> server:port), a source, a service or a rule's pair.

    Ids are the inventory's (0: unknown); names are as of the finding's window.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["edge", "source", "service", "endpoint"] = "edge"
    client_ip: str = ""
    server_ip: str = ""
    server_port: int | None = None
    proto: int | None = None
    client_project_id: int = 0
    server_project_id: int = 0
    client_vm_id: int = 0
    server_vm_id: int = 0
    client_vm: str = ""
    server_vm: str = ""
    client_project: str = ""
    server_project: str = ""
    label: str = Field(
        default="", description="one line: 'db-01 (10.10.1.5) -> backup-01 (10.10.3.9):873/tcp'"
    )

    def key(self) -> str:
        """Stable identity of the subject (what deduplication groups on)."""
        return f"{self.kind}|{self.client_ip}|{self.server_ip}|{self.server_port}|{self.proto}"


class Detection(BaseModel):
    """One detector's report for one window."""

    kind: str
    severity: Severity
    subject: Subject
    time_from: int = Field(description="window start, epoch s")
    time_to: int = Field(description="window end (exclusive), epoch s")
    summary: str
    figures: dict[str, Any] = Field(default_factory=dict)
    baseline: dict[str, Any] = Field(default_factory=dict)
    reproduce: str = ""
    merge_gap_s: float | None = Field(
        default=None, description="this kind's own merge gap (periodic: periods)"
    )


class Action(BaseModel):
    """An operator's acknowledgement or mute (or unmute) of a finding, with who and why."""

    finding_id: str
    action: Literal["ack", "mute", "unmute"]
    user: str
    reason: str = ""
    at: str = ""
    until: str | None = Field(default=None, description="mute ends then (ISO 8601); none = until unmuted")


class Finding(BaseModel):
    """A stored finding (one per kind, subject and episode)."""

    id: str
    kind: str
    severity: Severity
    subject: Subject
    time_from: str
    time_to: str
    first_detected: str = Field(description="when the engine first reported it (wall clock)")
    updated: str = Field(description="when it was last extended")
    detections: int = Field(description="minutes (or occurrences) folded into it")
    summary: str
    figures: dict[str, Any] = Field(default_factory=dict)
    baseline: dict[str, Any] = Field(default_factory=dict)
    reproduce: str = ""
    state: State = "open"
    actions: list[Action] = Field(default_factory=list)


def finding_id(kind: str, subject_key: str, episode_start_s: int) -> str:
    """16 hex digits naming one episode of ``kind`` on a subject."""
    raw = f"{kind}|{subject_key}|{episode_start_s}".encode()
    return hashlib.blake2b(raw, digest_size=8).hexdigest()

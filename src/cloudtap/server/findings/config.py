"""FindingsSection: the ``findings`` settings (schedule, retention, webhook and every detector's threshold).

Plain pydantic, importing nothing else from cloudtap, so ``server/settings.py`` can hold it.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class FindingsSection(BaseModel):
    """What the findings engine watches, how often, and the thresholds of each kind (docs/findings.md)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        default=True, description="run the engine every interval_s on the newest complete minute"
    )
    interval_s: float = Field(default=60.0, gt=0, description="seconds between cycles")
    lag_s: float = Field(
        default=30.0, ge=0, description="a minute is complete this long after its end (ingest delay)"
    )
    max_catchup_minutes: int = Field(
        default=60, ge=1, description="most minutes one scheduled cycle processes"
    )
    retention_days: float = Field(
        default=30.0, gt=0, description="findings and their ack/mute rows expire after this"
    )
    merge_gap_s: float = Field(
        default=300.0, ge=0, description="a detection within this of a finding's end extends it"
    )
    webhook_url: str | None = Field(
        default=None, description="POST new findings here in Alertmanager's webhook format"
    )
    webhook_min_severity: str = Field(
        default="warning", description="info | warning | critical: least severity sent"
    )
    webhook_timeout_s: float = Field(default=5.0, gt=0, description="time allowed to the webhook receiver")
    webhook_retries: int = Field(
        default=2, ge=0, le=10,
        description="tries again after 1 s, 2 s, 4 s... when the receiver is down, 5xx or 429",
    )  # fmt: skip
    external_url: str = Field(default="", description="this server's URL, for links in webhook alerts")
    # new_edge / new_port
    baseline_days: float = Field(
        default=28.0, gt=0, description="an edge not seen for this long is new again"
    )
    learn_minutes: int = Field(
        default=60, ge=0, description="minutes of baseline learnt before new edges are reported"
    )
    new_edge_warn_bytes: float = Field(
        default=100e6, ge=0, description="a new edge this big in a minute is a warning"
    )
    # burst
    burst_k: float = Field(
        default=6.0, gt=0, description="robust z-score of a minute against its edge's last hour"
    )
    burst_min_bytes: float = Field(default=5e6, ge=0, description="smallest minute (bytes) that can burst")
    burst_history_minutes: int = Field(default=60, ge=5, description="minutes of the edge's baseline")
    burst_detail: int = Field(
        default=10, ge=0, description="bursting edges also measured at 1 s (the biggest)"
    )
    # handshake failures / retransmissions / scan
    failed_min: int = Field(default=10, ge=1, description="failed handshakes in a minute on one edge")
    failed_ratio: float = Field(default=0.5, gt=0, le=1, description="failed / opened flows on that edge")
    retrans_min: int = Field(default=50, ge=1, description="retransmitted segments in a minute on one edge")
    retrans_ratio: float = Field(
        default=0.05, gt=0, le=1, description="retransmissions / packets on that edge"
    )
    retrans_k: float = Field(default=6.0, gt=0, description="robust z-score against the edge's last hour")
    scan_min_targets: int = Field(
        default=20, ge=2, description="distinct server:port a source failed to reach"
    )
    scan_failed_ratio: float = Field(
        default=0.5, gt=0, le=1, description="failed / opened flows of that source"
    )
    # periodic transfers
    push_ratio: float = Field(
        default=10.0, ge=1, description="a push: bigger direction / smaller one (+1 byte)"
    )
    push_min_bytes: float = Field(
        default=1e6, ge=0, description="a push moves at least this much in a minute"
    )
    periodic_lookback_h: float = Field(
        default=24.0, gt=0, le=24 * 31, description="history scanned for the period"
    )
    periodic_min_cycles: int = Field(default=2, ge=1, description="whole periods seen before reporting")
    periodic_regularity: float = Field(default=0.75, ge=0, le=1, description="least fraction of regular gaps")
    # load balancing
    lb_window_minutes: int = Field(
        default=10, ge=1, description="minutes the share per backend is measured over"
    )
    lb_min_flows: int = Field(
        default=100, ge=1, description="flows to a service in that window before judging it"
    )
    lb_share_factor: float = Field(
        default=2.0, gt=1, description="a backend with this many times the even share"
    )
    lb_sigmas: float = Field(
        default=5.0, gt=0, description="and this many Poisson sigmas above the even share"
    )
    lb_idle_lookback_hours: float = Field(
        default=6.0, ge=0, le=168,
        description="a backend that took flows this recently and none in the window is reported (0: off)",
    )  # fmt: skip
    # slow requests (application requests, request_1m)
    slow_min_requests: int = Field(
        default=20, ge=1, description="answered requests on an edge in the minute before judging its p99"
    )
    slow_k: float = Field(
        default=6.0, gt=0, description="robust z-score of the minute's p99 against the edge's last hour of p99s"
    )
    slow_factor: float = Field(
        default=3.0, ge=1, description="and at least this many times the baseline (median of those p99s)"
    )
    slow_min_ms: float = Field(default=5.0, ge=0, description="and at least this p99, milliseconds")
    slow_min_slow: int = Field(
        default=3, ge=1, description="and this many requests of the minute above slow_factor x the baseline"
    )
    slow_history_minutes: int = Field(default=60, ge=5, description="minutes of the edge's p99 baseline")
    slow_baseline_minutes: int = Field(
        default=10, ge=1, description="minutes with enough answered requests the baseline needs"
    )

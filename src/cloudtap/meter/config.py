"""MeterConfig: every knob of the flow meter, validated up front."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class MeterConfig(BaseModel):
    """Flow meter settings. Times are seconds of packet time (capture timestamps), not wall time."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_flows: int = Field(1 << 20, ge=16, le=1 << 28, description="flow table capacity (active flows)")
    initial_flows: int = Field(
        1 << 12,
        ge=16,
        le=1 << 28,
        description="slots allocated at start; a full table doubles, up to max_flows",
    )
    idle_timeout_s: float = Field(
        60.0, gt=0, description="idle timeout of UDP, ICMP, other protocols and TCP before establishment"
    )
    tcp_idle_timeout_s: float = Field(300.0, gt=0, description="idle timeout of established TCP flows")
    close_linger_s: float = Field(
        2.0, ge=0, description="how long a TCP flow closed by FIN/RST waits for trailing packets"
    )
    record_interval_s: float = Field(
        60.0, gt=0, description="long flows emit a record per interval (aligned to multiples of it)"
    )
    edge_interval_s: float = Field(
        1.0, gt=0, description="edge metric bucket; 1-minute edges roll up from it"
    )
    scan_interval_s: float = Field(1.0, gt=0, description="how often the table is scanned for expiry")
    output_batch: int = Field(65536, ge=64, description="records buffered before they are handed out")
    key_by_interface: bool = Field(
        False, description="split flows by capture interface (the agent: one flow per observation point)"
    )
    flow_id_base: int = Field(1, ge=0, description="first flow id (agents set a per-agent base)")

    @model_validator(mode="after")
    def _check_edges(self) -> MeterConfig:
        if self.record_interval_s < self.edge_interval_s:
            raise ValueError("record_interval_s must be >= edge_interval_s")
        return self

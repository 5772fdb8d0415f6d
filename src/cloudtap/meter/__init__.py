"""The flow meter: decoded packets to flow records with TCP health, and edge metrics."""

from __future__ import annotations

from cloudtap.meter.config import MeterConfig
from cloudtap.meter.edges import aggregate_edges, edges_with_text
from cloudtap.meter.meter import Meter, MeterStats
from cloudtap.meter.pipeline import FramePipeline, MeterResult, meter_captures, meter_file
from cloudtap.meter.records import flows_to_arrow

__all__ = [
    "FramePipeline",
    "Meter",
    "MeterConfig",
    "MeterResult",
    "MeterStats",
    "aggregate_edges",
    "edges_with_text",
    "flows_to_arrow",
    "meter_captures",
    "meter_file",
]

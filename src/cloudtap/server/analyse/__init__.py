"""Troubleshooting analyses on the flow store: topology, compare + bursts, drill-down, backtest.

Each analysis is a function ``(store, request, names) -> result`` over pydantic models (the API bodies
and answers); SQL aggregates in ClickHouse, numpy finishes per bucket. See docs/analysis.md.
"""

from cloudtap.server.analyse.backtest import BacktestRequest, BacktestResult, Occurrence, backtest
from cloudtap.server.analyse.bursts import Burst, BurstRequest, BurstResult, detect_bursts, find_bursts
from cloudtap.server.analyse.compare import Change, CompareRequest, CompareResult, compare
from cloudtap.server.analyse.drill import DrillRequest, DrillResult, drill
from cloudtap.server.analyse.errors import AnalysisError
from cloudtap.server.analyse.periodicity import Period, find_period
from cloudtap.server.analyse.selector import Selector
from cloudtap.server.analyse.signature import Condition, Signature, parse_condition
from cloudtap.server.analyse.signature_store import SignatureStore
from cloudtap.server.analyse.topology import Topology, TopologyRequest, topology

__all__ = [
    "AnalysisError", "BacktestRequest", "BacktestResult", "Burst", "BurstRequest", "BurstResult", "Change",
    "CompareRequest", "CompareResult", "Condition", "DrillRequest", "DrillResult", "Occurrence", "Period",
    "Selector", "Signature", "SignatureStore", "Topology", "TopologyRequest", "backtest", "compare",
    "detect_bursts", "drill", "find_bursts", "find_period", "parse_condition", "topology",
]  # fmt: skip

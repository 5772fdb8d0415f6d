"""Requests in the agent: a replayed capture ships kind ``requests`` equal to ``parse_file`` of it, its flow
records carry the counts, and with ``requests.enabled`` off (the default) nothing of it runs."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from agent_replay import replay_config
from prometheus_client import CollectorRegistry, generate_latest

from cloudtap.agent.budget import plan_budget, request_parser_bytes
from cloudtap.agent.config import LimitsSection, load_agent_config
from cloudtap.agent.config_overlay import apply_mode
from cloudtap.agent.control import AgentCollector
from cloudtap.agent.guard import CpuGovernor, PpsLimiter
from cloudtap.agent.identity import ObservationPoints
from cloudtap.agent.requests import heartbeat_fields
from cloudtap.agent.runner import Agent
from cloudtap.agent.worker import CaptureWorker
from cloudtap.capture.frames import FrameBatch
from cloudtap.errors import ConfigError
from cloudtap.l7 import RequestConfig, RequestParser, parse_file
from cloudtap.l7.records import OUTPUT_COLUMNS, requests_to_arrow
from cloudtap.meter import MeterConfig
from cloudtap.meter.records import flows_to_arrow
from cloudtap.schema.request import L7_DTYPE
from cloudtap.ship.frame import KNOWN_KINDS
from cloudtap.ship.server_sink import ServerSink
from cloudtap.ship.spool import Spool
from cloudtap.ship.transport import MockTransport
from cloudtap.ship.wire import decode_batch

MYSQL = "zeek/testing/btest/Traces/mysql/mysql.pcap"
HTTP = "PcapPlusPlus/Tests/Pcap++Test/PcapExamples/4KHttpRequests.pcap"
ANNOTATIONS = ("agent_id", "interface_name", "vm_domain", "vm_mac")
COUNTS = ("requests", "request_errors", "requests_answered", "request_latency_sum_us")


class Shipped:
    """Every batch the agent's server sink sends, decoded as the server's ingest does (known kinds only)."""

    def __init__(self) -> None:
        self.tables: dict[str, list[pa.Table]] = {}

    def __call__(self, agent_id: str, seq: int, data: bytes) -> int:
        batch = decode_batch(data, KNOWN_KINDS)
        for kind, table in batch.tables.items():
            self.tables.setdefault(kind, []).append(table)
        return 200

    def table(self, kind: str) -> pa.Table | None:
        parts = self.tables.get(kind)
        return pa.concat_tables(parts) if parts else None


def run_agent(pcap: Path, tmp_path: Path, enabled: bool) -> tuple[Agent, Shipped]:
    cfg = replay_config(pcap, tmp_path)
    cfg = cfg.model_copy(
        update={
            "requests": cfg.requests.model_copy(update={"enabled": enabled}),
            # a loaded test host must not pause the replay (the load breaker is tested in test_guard.py)
            "breakers": cfg.breakers.model_copy(update={"max_load_per_core": 1000.0}),
        }
    )
    shipped = Shipped()
    sink = ServerSink("hv-test", MockTransport(shipped), Spool(tmp_path / "spool", 50_000_000, first_seq=1),
                      flush_interval_s=0.1)  # fmt: skip
    agent = Agent(cfg, sink=sink)
    agent.run()  # replay to the end, flush, close the sink (every batch sent)
    return agent, shipped


def _sorted(table: pa.Table) -> pa.Table:
    keys = [("req_ns", "ascending"), ("client_ip", "ascending"), ("client_port", "ascending"),
            ("request_id", "ascending"), ("resource", "ascending")]  # fmt: skip
    return table.select(list(OUTPUT_COLUMNS)).sort_by(keys)


def _flow_counts(table: pa.Table) -> dict[tuple, list[int]]:
    out: dict[tuple, list[int]] = {}
    for row in table.select(
        ["client_ip", "client_port", "server_ip", "server_port", "proto", *COUNTS]
    ).to_pylist():
        if row["requests"] == 0:
            continue
        ends = sorted([(row["client_ip"], row["client_port"]), (row["server_ip"], row["server_port"])])
        c = out.setdefault((*ends, row["proto"]), [0, 0, 0, 0])
        for i, name in enumerate(COUNTS):
            c[i] += row[name]
    return out


def _per_record(table: pa.Table) -> dict[tuple, tuple]:
    keys = ["client_ip", "client_port", "server_ip", "server_port", "proto", "record_seq"]
    rows = table.select([*keys, *COUNTS]).to_pylist()
    return {tuple(r[k] for k in keys): tuple(r[c] for c in COUNTS) for r in rows}


def _request_counts(requests: np.ndarray, table: pa.Table) -> dict[tuple, list[int]]:
    out: dict[tuple, list[int]] = {}
    rows = table.select(["client_ip", "client_port", "server_ip", "server_port", "proto"]).to_pylist()
    for row, r in zip(rows, requests, strict=True):
        ends = sorted([(row["client_ip"], row["client_port"]), (row["server_ip"], row["server_port"])])
        c = out.setdefault((*ends, row["proto"]), [0, 0, 0, 0])
        answered = int(r["resp_ns"]) > 0
        c[0] += 1
        c[1] += int(r["status"]) != 0
        c[2] += answered
        c[3] += max(int(r["latency_us"]), 0) if answered else 0
    return out


T0 = 1_700_000_000 * 1_000_000_000


def one_frame_batch(ts_ns: int, payload: bytes) -> FrameBatch:
    """One Ethernet/IPv4/TCP frame 10.0.0.1:40000 -> 10.0.0.2:80 carrying ``payload``."""
    tcp = struct.pack("!HHIIBBHHH", 40000, 80, 1000, 1, 5 << 4, 0x18, 65535, 0, 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40 + len(payload), 1, 0, 64, 6, 0, bytes([10, 0, 0, 1]),
                     bytes([10, 0, 0, 2]))  # fmt: skip
    frame = b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02\x08\x00" + ip + tcp + payload
    return FrameBatch(
        data=np.frombuffer(frame, np.uint8).copy(), offset=np.zeros(1, np.int64),
        cap_len=np.array([len(frame)], np.uint32), wire_len=np.array([len(frame)], np.uint32),
        ts_ns=np.array([ts_ns], np.int64), linktype=np.ones(1, np.uint16), interface=np.zeros(1, np.uint16),
    )  # fmt: skip


@pytest.mark.parametrize("capture", [MYSQL, HTTP])
def test_replay_ships_the_requests_parse_file_finds(shared_pcaps: Path, tmp_path: Path, capture: str) -> None:
    pcap = shared_pcaps / capture
    if not pcap.is_file():
        pytest.skip(f"{capture} is not in ../shared/pcaps")
    agent, shipped = run_agent(pcap, tmp_path, enabled=True)
    expected = parse_file(pcap).requests
    assert len(expected) > 0
    requests = shipped.table("requests")
    assert requests is not None and requests.num_rows == len(expected)
    assert _sorted(requests).equals(_sorted(requests_to_arrow(expected)))
    assert set(ANNOTATIONS) <= set(requests.column_names)
    assert set(requests["agent_id"].to_pylist()) == {agent.agent_id}
    # Flow records carry the counts: per flow they add up to that flow's requests, none late.
    flows = shipped.table("flows")
    assert flows is not None and set(COUNTS) <= set(flows.column_names)
    for name in ANNOTATIONS:  # the same observation point annotations as the flows
        assert set(requests[name].to_pylist()) <= set(flows[name].to_pylist()), name
    assert pc.sum(flows["requests"]).as_py() == len(expected)
    assert _flow_counts(flows) == _request_counts(expected, requests_to_arrow(expected))
    # ... and record by record (each request on the record of the period it concluded in) as parse_file's
    metered = parse_file(pcap, meter=True).flows
    assert _per_record(flows) == _per_record(flows_to_arrow(metered))
    status = agent.status().requests
    assert status["enabled"] and status["requests"] == len(expected) and status["flow_counts_late"] == 0
    assert status["records"] == len(expected) and sum(status["by_status"].values()) == len(expected)
    assert status["flow_records_matched"] >= len(_flow_counts(flows))
    beat = heartbeat_fields(status)
    assert beat["requests_parsed"] == len(expected) and beat["request_flow_counts_late"] == 0
    registry = CollectorRegistry()
    registry.register(AgentCollector(agent))
    metrics = generate_latest(registry).decode()
    assert f'cloudtap_agent_requests_total{{agent="{agent.agent_id}"}} {float(len(expected))}' in metrics
    assert 'reason="flow_counts_late"' in metrics and "cloudtap_agent_request_records_total" in metrics


def test_disabled_by_default_ships_no_requests_and_costs_nothing(shared_pcaps: Path, tmp_path: Path) -> None:
    pcap = shared_pcaps / MYSQL
    if not pcap.is_file():
        pytest.skip(f"{MYSQL} is not in ../shared/pcaps")
    assert load_agent_config(None, env={}).requests.enabled is False
    agent, shipped = run_agent(pcap, tmp_path, enabled=False)
    assert "requests" not in shipped.tables
    assert all(w.requests is None for w in agent.workers) and agent.request_config is None
    assert agent.budget.request_bytes == 0
    flows = shipped.table("flows")
    assert flows is not None and flows.num_rows > 0
    assert pc.sum(flows["requests"]).as_py() == 0  # the columns are there, zero: no parser ran
    assert agent.status().requests == {"enabled": False} and heartbeat_fields({"enabled": False}) == {}
    registry = CollectorRegistry()
    registry.register(AgentCollector(agent))
    assert "cloudtap_agent_request" not in generate_latest(registry).decode()


def test_requests_section_keys_env_and_validation() -> None:
    cfg = load_agent_config(
        None,
        env={
            "CLOUDTAP_AGENT__REQUESTS__ENABLED": "true",
            "CLOUDTAP_AGENT__REQUESTS__PROTOCOLS": "[http, dns]",
            "CLOUDTAP_AGENT__REQUESTS__QUEUE": "4",
            "CLOUDTAP_AGENT__REQUESTS__TIMEOUT_S": "5",
            "CLOUDTAP_AGENT__REQUESTS__MAX_FLOWS": "2048",
        },
    )
    rq = cfg.requests
    assert rq.enabled and rq.protocols == ["http", "dns"] and rq.queue == 4 and rq.timeout_s == 5
    assert rq.max_flows == 2048
    assert {apply_mode(f"requests.{key}") for key in type(rq).model_fields} == {"restart"}
    with pytest.raises(ConfigError, match="protocols"):
        load_agent_config(None, env={"CLOUDTAP_AGENT__REQUESTS__PROTOCOLS": "[http, smtp]"})
    with pytest.raises(ConfigError, match="queue"):
        load_agent_config(None, env={"CLOUDTAP_AGENT__REQUESTS__QUEUE": "0"})


def test_budget_counts_the_request_parser() -> None:
    cfg = RequestConfig(max_flows=16384)
    per_worker = request_parser_bytes(cfg)
    parser = RequestParser(cfg)
    # the parser's own arrays, plus the drained copies of its output buffer in flight
    assert per_worker == parser.memory_bytes + 2 * cfg.out_rows * L7_DTYPE.itemsize
    limits = LimitsSection(max_memory_mib=1024)
    plain = plan_budget(limits, workers=2)
    with_requests = plan_budget(limits, workers=2, request_bytes=per_worker)
    assert with_requests.request_bytes == 2 * per_worker
    assert with_requests.planned_bytes <= with_requests.grant_bytes
    assert with_requests.max_flows < plain.max_flows  # the fixed parser comes off the flow table's share
    with pytest.raises(ConfigError, match="request parser"):
        plan_budget(limits, workers=2, request_bytes=400 << 20)
    with pytest.raises(ConfigError):
        plan_budget(limits, request_bytes=-1)


def test_live_clock_times_out_a_quiet_flows_request() -> None:
    """A request with no answer and no more packets on its flow times out with the worker's wall-clock tick."""
    got: list[np.ndarray] = []
    worker = CaptureWorker(
        "0", lambda: None, MeterConfig(key_by_interface=True), ObservationPoints(), on_records=lambda r: None,  # type: ignore[arg-type,return-value]
        on_edges=lambda d: None, limiter=PpsLimiter(0), governor=CpuGovernor(64.0), live_clock=True,
        request_config=RequestConfig(timeout_s=1.0, count_hold_s=400), on_requests=got.append,
    )  # fmt: skip
    worker.pipeline.packet_filter = worker.request_tap(worker.pipeline.packet_filter)
    worker.pipeline.feed(one_frame_batch(T0, b"GET /quiet HTTP/1.1\r\nHost: h\r\n\r\n"))
    assert worker.requests is not None and worker.requests.stats["requests"] == 1
    worker._last_drain = time.monotonic() - 1.0  # a drain is due
    worker._tick()  # the wall clock is far past T0 + 1 s
    records = np.concatenate(got) if got else np.zeros(0, L7_DTYPE)
    assert len(records) == 1 and records["status"][0] == 3  # timeout

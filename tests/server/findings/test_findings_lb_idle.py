"""``lb_imbalance`` reports a backend that stopped taking a service's flows, and only when that cannot be chance."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from cloudtap.server.findings.config import FindingsSection
from cloudtap.server.findings.context import Cycle
from cloudtap.server.findings.detect_lb import detect_lb

START = 1_767_225_600  # 2026-01-01 00:00 UTC
MINUTES = 180
BACKENDS = ("10.9.0.1", "10.9.0.2", "10.9.0.3")
STOPS_AT = 170  #: the minute from which the third backend takes nothing


def edges(per_minute: int, port: int = 8080, clients: int = 4, stops_at: int | None = STOPS_AT) -> pa.Table:
    """1-minute edges of one service (subnet 7, TCP ``port``): ``per_minute`` flows to each of three backends."""
    rows: dict[str, list[Any]] = {k: [] for k in ("time_ns", "client_ip", "server_ip", "flows_opened")}
    for minute in range(MINUTES):
        for b, server in enumerate(BACKENDS):
            if b == 2 and stops_at is not None and minute >= stops_at:
                continue
            for c in range(clients):
                rows["time_ns"].append((START + minute * 60) * 10**9)
                rows["client_ip"].append(f"10.8.0.{c + 1}")
                rows["server_ip"].append(server)
                rows["flows_opened"].append(per_minute // clients)
    n = len(rows["time_ns"])
    zeros = np.zeros(n, np.uint64)
    opened = np.array(rows["flows_opened"], np.uint64)
    return pa.table({
        "time_ns": pa.array(rows["time_ns"], pa.int64()), "client_ip": rows["client_ip"], "server_ip": rows["server_ip"],
        "server_port": pa.array(np.full(n, port, np.uint16)), "proto": pa.array(np.full(n, 6, np.uint8)),
        "vlan": pa.array(np.zeros(n, np.uint16)), "tunnel_id": pa.array(np.zeros(n, np.uint32)),
        "interface": pa.array(np.zeros(n, np.uint16)), "packets_c2s": opened * 10, "packets_s2c": opened * 10,
        "bytes_c2s": opened * 1000, "bytes_s2c": opened * 5000, "retrans": zeros, "flows_opened": opened,
        "flows_closed": opened, "flows_failed": zeros, "rtt_sum_us": np.zeros(n), "rtt_count": zeros,
        "agent_id": ["hv-1"] * n, "server_subnet_id": pa.array(np.full(n, 7, np.uint32)),
    })  # fmt: skip


@pytest.fixture()
def store(open_store: Any) -> Any:
    s = open_store()
    s.insert({"edges_60s": pa.concat_tables([edges(48), edges(3, port=9090, clients=1)])})  # a busy and a quiet one
    return s


def at(store: Any, minute: int, **config: Any) -> list[Any]:
    t1 = START + minute * 60
    return detect_lb(Cycle(store=store, config=FindingsSection(**config), t0=t1 - 60, t1=t1))


def test_a_backend_that_stopped_taking_flows_is_reported(store: Any) -> None:
    (found,) = at(store, STOPS_AT + 10)  # 10 minutes after it stopped: the whole window without it
    assert found.kind == "lb_imbalance" and found.subject.kind == "service" and found.subject.server_port == 8080
    assert found.figures["idle_backends"] == ["10.9.0.3"] and found.figures["backends"] == 3
    assert found.figures["shares"] == {"10.9.0.1": 0.5, "10.9.0.2": 0.5, "10.9.0.3": 0.0}
    assert found.figures["flows"] == 2 * 48 * 10  # what the two others took in the window
    assert "10.9.0.3 took no new flows in 10 min" in found.summary and "takes" not in found.summary


def test_nothing_while_every_backend_takes_its_share(store: Any) -> None:
    assert at(store, STOPS_AT) == []  # the window ends as it stops: it still took flows in the window


def test_a_quiet_service_is_not_judged_on_a_gap_chance_explains(store: Any) -> None:
    """Port 9090 lost a backend too, but an even share of 20 flows in 10 minutes is 0 by chance now and then
    (it must be at least lb_sigmas² = 25)."""
    assert [f.subject.server_port for f in at(store, STOPS_AT + 10, lb_min_flows=20)] == [8080]
    assert [f.subject.server_port for f in at(store, STOPS_AT + 10, lb_min_flows=20, lb_sigmas=4)] == [8080, 9090]


def test_the_lookback_can_be_turned_off(store: Any) -> None:
    assert at(store, STOPS_AT + 10, lb_idle_lookback_hours=0) == []

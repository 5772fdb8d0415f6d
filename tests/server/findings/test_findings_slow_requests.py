"""``slow_requests`` on planted requests: an hour of quiet latencies, then one edge slows down for a minute."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cloudtap.server.findings.engine import FindingsEngine
from cloudtap.server.store.base import BatchKey

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "store"))
from request_batches import NS, START_NS, planted_requests, request_batch  # noqa: E402

T0 = START_NS // NS  #: the quiet hour starts here (epoch s)
SLOW = T0 + 3600  #: the minute in which 10.0.0.1 -> 10.0.1.1:80 slows down
SLOW_PATH = b"/api/orders/export"


def _quiet(minutes: int, start_s: int, seed: int) -> np.ndarray:
    """~2 ms requests on 2 clients x 2 servers, ~200 a minute."""
    return planted_requests(200 * minutes, seed=seed, start_ns=start_s * NS, span_s=60.0 * minutes, clients=2,
                            servers=2, latency_us=2_000)  # fmt: skip


def _slow_minute() -> np.ndarray:
    """The slow edge's requests in the slow minute: ~40 ms, one resource."""
    r = planted_requests(
        120, seed=99, start_ns=SLOW * NS, span_s=60.0, clients=1, servers=1, latency_us=40_000
    )
    r["resource"] = SLOW_PATH
    return r


@pytest.fixture
def engine(open_store: Any) -> FindingsEngine:
    store = open_store()
    batches = [_quiet(60, T0, 1), _quiet(2, SLOW, 2)]
    store.insert({"requests": request_batch(np.concatenate(batches), "hv-1")}, BatchKey("hv-1", 1))
    store.insert({"requests": request_batch(_slow_minute(), "hv-1")}, BatchKey("hv-1", 2))
    # a second agent seeing part of the same traffic: counted once (the busiest agent's figures)
    store.insert({"requests": request_batch(_slow_minute()[:30], "hv-2")}, BatchKey("hv-2", 1))
    return FindingsEngine(store)


def test_the_slow_minute_is_one_finding_with_its_slowest_resource(engine: FindingsEngine) -> None:
    for t in range(SLOW - 5 * 60, SLOW + 2 * 60, 60):  # 5 quiet minutes, the slow one, one quiet after
        engine.run_minute(t)
    assert not engine.errors, engine.errors
    (f,) = engine.findings.find(kind="slow_requests", limit=100)
    s = f.subject
    assert (s.client_ip, s.server_ip, s.server_port) == ("10.0.0.1", "10.0.1.1", 80)
    assert s.label.endswith(":80 http")
    assert f.time_from.startswith("2026-01-05T11:00:00") and f.detections == 1
    slow = _slow_minute()
    lat_ms = slow["latency_us"][slow["latency_us"] >= 0] / 1000
    assert f.figures["requests"] == 120 + _edge_requests(SLOW) and f.figures["p99_ms"] > 20
    assert abs(f.figures["max_ms"] - lat_ms.max()) < 1e-6
    assert f.figures["factor"] >= 3 and f.figures["z"] > 6 and f.figures["slow"] >= 60
    assert 1.5 <= f.baseline["median_p99_ms"] <= 15 and f.baseline["minutes_with_requests"] >= 10
    top = f.figures["slowest"][0]
    assert top["resource"] == SLOW_PATH.decode() and top["requests"] >= 100
    assert abs(top["max_ms"] - lat_ms.max()) < 1e-6
    assert f.reproduce.startswith("cloudtap query top --table request_log --from 2026-01-05T11:00:00Z")


def _edge_requests(minute_s: int) -> int:
    """Quiet requests of 10.0.0.1 -> 10.0.1.1 in the minute (planted by ``_quiet(2, SLOW, 2)``)."""
    r = _quiet(2, SLOW, 2)
    inside = (r["req_ns"] >= minute_s * NS) & (r["req_ns"] < (minute_s + 60) * NS)
    edge = (r["client_lo"] & 0xFF == 1) & (r["server_lo"] & 0xFF == 1)
    return int(np.sum(inside & edge))


def test_quiet_minutes_find_nothing(engine: FindingsEngine) -> None:
    for t in range(T0 + 35 * 60, T0 + 60 * 60, 60):  # each with 35+ minutes of history
        engine.run_minute(t)
    engine.run_minute(SLOW + 60)
    assert not engine.errors, engine.errors
    assert engine.findings.find(kind="slow_requests", limit=100) == []


def test_no_baseline_no_finding(open_store: Any) -> None:
    """A slow edge never seen before has nothing to be slow against."""
    store = open_store()
    store.insert({"requests": request_batch(_slow_minute(), "hv-1")}, BatchKey("hv-1", 1))
    engine = FindingsEngine(store)
    engine.run_minute(SLOW)
    assert not engine.errors and engine.findings.find(kind="slow_requests", limit=100) == []

"""'Why no data for VM X?' covers the server: each cause produced for real on a real server and chDB store
(refused and dead-lettered batches, failing inserts, the disk budget, tagging that missed, the pps cap),
and the diagnosis names it as the first broken link with what to do."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from diagnose_env import AGENT, WEB_IP, WEB_MAC, Env, first_broken, flows, register, settings
from fastapi.testclient import TestClient

from access_helpers import grant
from cloudtap.server.api.app import create_app


def _env(open_store: Callable[..., Any], tmp_path: Path, **storage: Any) -> Iterator[Env]:
    store = open_store()
    app = create_app(settings(tmp_path, store.database, **storage), store)
    with TestClient(app) as client:
        agent_id, agent = register(client)
        env = Env(app, client, agent_id, agent, grant(app))
        env.heartbeat()
        yield env


@pytest.fixture
def env(open_store: Callable[..., Any], tmp_path: Path) -> Iterator[Env]:
    yield from _env(open_store, tmp_path)


def test_batches_the_server_refused_and_the_agent_dead_lettered(env: Env) -> None:
    assert env.why()["broken"] == "ingest"  # nothing shipped yet: the symptom alone
    refused = env.ship(1, {"edges_10s": pa.table({"time_ns": [1]})})  # a kind this server does not know
    assert refused.status_code == 400, refused.text
    env.heartbeat(ship_dead_letters=1, ship_last_status=400)  # the agent set it aside, as ServerSink does
    d = env.why()
    step = first_broken(d)
    assert step["step"] == "rejected", d
    assert f"refused 1 batch(es) of agent {AGENT} (unknown kind 1)" in step["detail"]
    assert "edges_10s" in step["detail"] and "dead-lettered 1 batch(es)" in step["detail"]
    assert "dead-letter" in step["fix"]
    assert [s["step"] for s in d["steps"]][-1] == "rejected"  # the walk stops at the cause, before 'ingest'
    other = env.app.state.ingestor.refusals_of("agent-elsewhere")
    assert other is None  # counted for the batch's agent only


def test_failing_inserts_are_backpressure(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    store = env.app.state.store

    def full(*args: Any, **kwargs: Any) -> Any:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store, "insert", full)
    answer = env.ship(1, {"flows": flows(WEB_IP, "10.10.1.6", WEB_MAC)})
    assert answer.status_code == 503, answer.text  # the server pushes back: the agent keeps and resends
    env.heartbeat(ship_retries=1, ship_last_status=503, ship_pending_batches=1)
    d = env.why()
    step = first_broken(d)
    assert step["step"] == "backpressure", d
    assert "1 coalesced insert(s) wait to be written again" in step["detail"]
    assert "No space left on device" in step["detail"] and "last answer HTTP 503" in step["detail"]
    assert "disk space" in step["fix"]


def test_rows_dropped_by_the_disk_budget(open_store: Callable[..., Any], tmp_path: Path) -> None:
    for env in _env(open_store, tmp_path, max_disk_gib=1e-9):  # a budget of 1 byte
        assert env.ship(1, {"flows": flows(WEB_IP, "10.10.1.6", WEB_MAC)}).status_code == 200
        assert env.why()["ok"]
        run = env.app.state.housekeeper.run_once()
        assert {p.table for p in run.dropped} >= {"flow_log"}
        (drop,) = env.app.state.housekeeper.drops(None, ("flow_log",))
        assert drop.time_to - drop.time_from == 86_400 and drop.dropped_at >= run.started
        d = env.why()
        step = first_broken(d)
        assert step["step"] == "retention", d
        assert f"agent {AGENT}'s batches were stored" in step["detail"] and "records are gone" in step["detail"]
        assert "disk budget" in step["detail"] and "flow_log" in step["detail"]
        assert "max_disk_gib" in step["fix"]


def test_flows_stored_without_the_vm_id(env: Env) -> None:
    tagged = env.ship(1, {"flows": flows(WEB_IP, "10.10.1.6", WEB_MAC)})
    assert tagged.status_code == 200, tagged.text
    d = env.why()
    assert d["ok"] and d["steps"][-1]["step"] == "tagging" and d["steps"][-1]["status"] == "ok", d
    env.app.state.store.command(f"TRUNCATE TABLE {env.app.state.store.database}.flow_log")
    # the VM's port (its MAC) now sends from an address the inventory does not list for it
    moved = env.ship(2, {"flows": flows("10.10.1.99", "10.99.0.9", WEB_MAC, seq=2)})
    assert moved.status_code == 200, moved.text
    d = env.why()
    step = first_broken(d)
    assert step["step"] == "tagging", d
    assert "8 record(s) of VM web-01" in step["detail"] and "none tagged with its id" in step["detail"]
    assert "inventory" in step["fix"]


def test_pps_cap_drops_are_not_kernel_drops(env: Env) -> None:
    env.heartbeat(pps_limit_drops=50_000, kernel_drops=0, throttled_s=2.5)
    d = env.why()
    step = first_broken(d)
    assert step["step"] == "limits", d
    assert "pps cap (limits.max_pps)" in step["detail"] and "50000" in step["detail"]
    assert "held capture back 2.5 s" in step["detail"] and "limits.max_pps" in step["fix"]
    drops = next(s for s in d["steps"] if s["step"] == "drops")
    assert drops["status"] == "ok" and "kernel 0" in drops["detail"]

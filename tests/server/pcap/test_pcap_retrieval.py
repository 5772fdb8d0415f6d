"""PCAP retrieval end to end: two replay agents with packet stores, the server API over HTTP, tshark.

The synth capture is split by tcpdump into two halves, one per agent; the server merges both agents'
answers by time, and the file must equal tcpdump's reading of the original for the same window and
filter (timestamps, wire lengths, bytes up to the snap length), open in tshark, and name its
interfaces ``<host>/<vm>/<interface>``. Callers are users with ``pcap:read`` (operators); every
retrieval, served or refused, is a ``pcap.retrieve`` audit record naming the authenticated user.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from pcap_env import AGENT_KEY, key_header, replay_agent, serve, synth, tcpdump_split, window

from access_helpers import grant
from capture_frames import frames_of
from cloudtap.server.audit import audit_of
from cloudtap.server.pcap import StaticTargets, Target
from cloudtap.server.pcap.fleet_targets import AppFleetTargets
from cloudtap.server.settings import ServerSettings


def _settings(tmp: Path, audit: str = "audit.jsonl") -> ServerSettings:
    return ServerSettings.model_validate(
        {"pcap": {"spool_directory": str(tmp / "spool"), "max_bytes": 64 << 20},
         "auth": {"db_path": str(tmp / "access.sqlite"), "audit_log": str(tmp / audit)},
         "controller": {"db_path": str(tmp / "ctl.sqlite")}}
    )  # fmt: skip


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("pcap")
    original = synth(tmp / "cloud.pcap")
    half_a = tcpdump_split(original, "vlan and tcp", tmp / "a.pcap")
    half_b = tcpdump_split(original, "not (vlan and tcp)", tmp / "b.pcap")
    with replay_agent(half_a, tmp / "a", "hv-a") as a, replay_agent(half_b, tmp / "b", "hv-b") as b:
        targets = StaticTargets(
            {"db-01": [Target(a.control.url, ("a.pcap",), key=AGENT_KEY), Target(b.control.url, (), "hv-b", key=AGENT_KEY)],
             "dead-01": [Target("http://127.0.0.1:9", key=AGENT_KEY)]}
        )  # fmt: skip
        with serve(_settings(tmp), targets) as served:
            users = {
                "alice": grant(served.app, "operator", name="alice"),
                "bob": grant(served.app, "operator", name="bob"),
                "shop-op": grant(served.app, "operator", ["shop"], name="shop-op"),
                "viewer": grant(served.app, "viewer", name="vera"),
            }
            yield {"tmp": tmp, "original": original, "half_b": half_b, "a": a, "b": b, "url": served.url,
                   "app": served.app, "users": users, "audit": audit_of(served.app)}  # fmt: skip


def _post(
    env: dict[str, Any], body: dict[str, Any], out: Path | None = None, user: str = "alice"
) -> httpx.Response:
    with httpx.Client(timeout=60) as client:
        r = client.post(env["url"] + "/api/v1/pcap", json=body, headers=env["users"].get(user, {}))
    if out is not None and r.status_code == 200:
        out.write_bytes(r.content)
    return r


def _audited(env: dict[str, Any], r: httpx.Response) -> dict[str, Any]:
    """The newest ``pcap.retrieve`` record, once it is ``r``'s (a served one is written when its stream ends)."""
    deadline = time.monotonic() + 10
    while True:
        line = env["audit"].read(action="pcap.retrieve")[-1]
        if line["status"] == r.status_code and (r.status_code != 200 or line["bytes"] == len(r.content)):
            return line  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, f"no audit record of the {r.status_code} answer"
        time.sleep(0.02)


def _window(env: dict[str, Any]) -> tuple[int, int]:
    idx = env["a"].packet_store.index()
    lo, hi = int(idx["min_ts"].min()), int(idx["max_ts"].max())
    return lo + (hi - lo) // 4, lo + (hi - lo) // 2


def test_vm_retrieval_merges_agents_and_equals_tcpdump(env: dict[str, Any]) -> None:
    lo, hi = _window(env)
    bpf = "vlan and (tcp port 873 or udp)"
    out = env["tmp"] / "incident.pcapng"
    r = _post(env, {"vm": "db-01", "from": lo, "to": hi, "filter": bpf}, out)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/x-pcapng"
    assert int(r.headers["content-length"]) == out.stat().st_size
    shark = subprocess.run(["tshark", "-r", str(out), "-T", "fields", "-e", "frame.interface_name"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    names = set(shark.stdout.split())
    assert names == {"hv-a/-/a.pcap", "hv-b/-/b.pcap"}  # one IDB per capture point, both agents present
    ts, wl, data = frames_of(out)
    ref = tcpdump_split(env["original"], bpf, env["tmp"] / "ref.pcap")
    rts, rwl, rdata = window(*frames_of(ref), lo, hi)
    assert len(rts) > 500 and int(r.headers["x-cloudtap-packets"]) == len(rts)
    assert np.array_equal(ts, rts) and np.array_equal(wl, rwl)  # merged in time order
    assert sorted(data) == sorted(rdata) and data[:50] == rdata[:50]
    line = _audited(env, r)
    assert (
        line["actor"] == "alice"
        and line["outcome"] == "ok"
        and line["vm"] == "db-01"
        and line["status"] == 200
    )
    assert line["bytes"] == out.stat().st_size and line["packets"] == len(rts) and line["complete"] is True
    assert line["from_ns"] == lo and line["filter"] == bpf and len(line["targets"]) == 2


def test_callers_need_pcap_read_and_a_project_bound_caller_only_its_vms(env: dict[str, Any]) -> None:
    lo, hi = _window(env)
    before = len(env["audit"].read(action="pcap.retrieve"))
    assert _post(env, {"vm": "db-01", "from": lo, "to": hi}, user="nobody").status_code == 401
    assert _post(env, {"vm": "db-01", "from": lo, "to": hi}, user="viewer").status_code == 403  # no pcap:read
    assert len(env["audit"].read(action="pcap.retrieve")) == before  # refused by the guard, before the route
    # an operator of project "shop" asks for a VM the server cannot place in shop: refused, and audited
    r = _post(env, {"vm": "db-01", "from": lo, "to": hi}, user="shop-op")
    assert r.status_code == 403 and "not in your projects" in r.json()["detail"]
    line = _audited(env, r)
    assert line["actor"] == "shop-op" and line["outcome"] == "refused" and line["status"] == 403
    assert line["vm"] == "db-01" and line["bytes"] == 0
    r = _post(env, {"agents": [{"agent": "hv-b"}], "from": lo, "to": hi}, user="shop-op")
    assert r.status_code == 403 and "every project" in r.json()["detail"]


def test_agent_endpoint_needs_its_key(env: dict[str, Any]) -> None:
    lo, hi = _window(env)
    url = env["b"].control.url
    stats = httpx.get(url + "/packets/stats", headers=key_header()).json()
    assert stats["stats"]["packets_written"] > 0 and stats["interfaces"][0]["name"] == "b.pcap"
    bad = httpx.get(
        url + "/packets", params={"from": lo, "to": hi, "filter": "host and"}, headers=key_header()
    )
    assert bad.status_code == 400 and "filter" in bad.json()["error"]
    assert httpx.get(url + "/packets/stats").status_code == 401
    assert httpx.get(url + "/packets/stats", headers=key_header("wrong-key-0123456789")).status_code == 401


def test_registered_agent_by_name(env: dict[str, Any]) -> None:
    """``agents: [{agent, interfaces}]`` asks a registered agent at its registered URL, with its control key."""
    from cloudtap.server.api.routes.controller import get_controller_app
    from cloudtap.server.api.routes.inventory import install
    from cloudtap.server.controller.status import HeartbeatReport

    lo, hi = _window(env)
    app = env["app"]
    install(app)
    ctl = get_controller_app(app)
    issued = ctl.register(
        None, {"name": "hv-c", "hostname": "hv-c", "machine_id": "m-hv-c"}, address="127.0.0.1"
    )
    static = app.state.pcap_targets
    app.state.pcap_targets = AppFleetTargets(app)
    try:
        with replay_agent(env["half_b"], env["tmp"] / "c", "hv-c", key=issued["control_key"]) as c:
            answer = ctl.heartbeat(ctl.registry.get(issued["agent_id"]), HeartbeatReport(control_url=c.control.url),
                                   peer="127.0.0.1")  # fmt: skip
            assert not answer["control_url_error"]
            out = env["tmp"] / "one.pcapng"
            r = _post(env, {"agents": [{"agent": "hv-c", "interfaces": ["b.*"]}], "from": lo, "to": hi}, out)
            assert r.status_code == 200, r.text
            ts, _, _ = frames_of(out)
            rts, _, _ = window(*frames_of(env["half_b"]), lo, hi)
            assert len(rts) > 0 and np.array_equal(ts, rts)
            line = _audited(env, r)
            assert line["actor"] == "alice" and line["agents"] == ["hv-c"] and line["outcome"] == "ok"
            unknown = _post(env, {"agents": [{"agent": "hv-nope"}], "from": lo, "to": hi})
            assert unknown.status_code == 400 and "hv-nope" in unknown.json()["detail"]
    finally:
        app.state.pcap_targets = static


def test_size_cap_answers_413_with_reason_and_is_audited(env: dict[str, Any]) -> None:
    lo, hi = _window(env)
    r = _post(env, {"vm": "db-01", "from": lo, "to": hi, "max_bytes": 20_000}, user="bob")
    assert r.status_code == 413
    assert "max_bytes=20000" in r.json()["detail"]
    line = _audited(env, r)
    assert line["actor"] == "bob" and line["status"] == 413 and "max_bytes" in line["error"]
    assert line["outcome"] == "refused"


def test_unknown_vm_no_inventory_and_dead_agent(env: dict[str, Any]) -> None:
    lo, hi = _window(env)
    assert _post(env, {"vm": "nope", "from": lo, "to": hi}).status_code == 404
    r = _post(env, {"vm": "dead-01", "from": lo, "to": hi})
    assert r.status_code == 502 and "127.0.0.1:9" in r.json()["detail"]
    line = _audited(env, r)
    assert line["actor"] == "alice" and line["status"] == 502 and line["outcome"] == "failed"
    # callers never name an agent URL
    r = _post(env, {"targets": [{"url": "http://127.0.0.1:9"}], "from": lo, "to": hi})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][:2] == ["body", "targets"]
    assert _post(env, {"vm": "db-01", "from": hi, "to": lo}).status_code == 400
    with serve(_settings(env["tmp"] / "bare", "audit2.jsonl")) as bare:
        r = httpx.post(
            bare.url + "/api/v1/pcap", json={"vm": "db-01", "from": lo, "to": hi}, headers=grant(bare.app)
        )
    assert r.status_code == 400 and "no inventory" in r.json()["detail"]

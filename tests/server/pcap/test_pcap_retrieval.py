"""PCAP retrieval end to end: two replay agents with packet stores, the server API over HTTP, tshark.

The synth capture is split by tcpdump into two halves, one per agent; the server merges both agents'
answers by time, and the file must equal tcpdump's reading of the original for the same window and
filter (timestamps, wire lengths, bytes up to the snap length), open in tshark, and name its
interfaces ``<host>/<vm>/<interface>``.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from pcap_env import replay_agent, serve_app, synth, tcpdump_split, window

from capture_frames import frames_of
from cloudtap.server.pcap import AuditLog, StaticTargets, Target
from cloudtap.server.settings import ServerSettings


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("pcap")
    original = synth(tmp / "cloud.pcap")
    half_a = tcpdump_split(original, "vlan and tcp", tmp / "a.pcap")
    half_b = tcpdump_split(original, "not (vlan and tcp)", tmp / "b.pcap")
    with replay_agent(half_a, tmp / "a", "hv-a") as a, replay_agent(half_b, tmp / "b", "hv-b") as b:
        settings = ServerSettings.model_validate(
            {"pcap": {"audit_log": str(tmp / "audit.jsonl"), "spool_directory": str(tmp / "spool"), "max_bytes": 64 << 20}}
        )
        targets = StaticTargets({"db-01": [Target(a.control.url, ("a.pcap",)), Target(b.control.url, (), "hv-b")]})
        with serve_app(settings, targets) as url:
            yield {"tmp": tmp, "original": original, "a": a, "b": b, "url": url, "audit": AuditLog(tmp / "audit.jsonl")}


def _post(env: dict[str, Any], body: dict[str, Any], out: Path | None = None, user: str = "alice") -> httpx.Response:
    with httpx.Client(timeout=60) as client:
        r = client.post(env["url"] + "/api/v1/pcap", json=body, headers={"X-Cloudtap-User": user})
    if out is not None and r.status_code == 200:
        out.write_bytes(r.content)
    return r


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
    line = env["audit"].read()[-1]
    assert line["user"] == "alice" and line["vm"] == "db-01" and line["status"] == 200
    assert line["bytes"] == out.stat().st_size and line["packets"] == len(rts) and line["complete"] is True
    assert line["from_ns"] == lo and line["filter"] == bpf and len(line["targets"]) == 2


def test_explicit_targets_and_agent_endpoint(env: dict[str, Any]) -> None:
    lo, hi = _window(env)
    out = env["tmp"] / "one.pcapng"
    r = _post(env, {"targets": [{"url": env["b"].control.url, "interfaces": ["b.*"]}], "from": lo, "to": hi}, out)
    assert r.status_code == 200, r.text
    ts, _, _ = frames_of(out)
    rts, _, _ = window(*frames_of(env["tmp"] / "b.pcap"), lo, hi)
    assert np.array_equal(ts, rts)
    stats = httpx.get(env["b"].control.url + "/packets/stats").json()
    assert stats["stats"]["packets_written"] > 0 and stats["interfaces"][0]["name"] == "b.pcap"
    bad = httpx.get(env["b"].control.url + "/packets", params={"from": lo, "to": hi, "filter": "host and"})
    assert bad.status_code == 400 and "filter" in bad.json()["error"]


def test_size_cap_answers_413_with_reason_and_is_audited(env: dict[str, Any]) -> None:
    lo, hi = _window(env)
    r = _post(env, {"vm": "db-01", "from": lo, "to": hi, "max_bytes": 20_000}, user="bob")
    assert r.status_code == 413
    assert "max_bytes=20000" in r.json()["detail"]
    line = env["audit"].read()[-1]
    assert line["user"] == "bob" and line["status"] == 413 and "max_bytes" in line["error"]


def test_unknown_vm_no_inventory_and_dead_agent(env: dict[str, Any]) -> None:
    lo, hi = _window(env)
    assert _post(env, {"vm": "nope", "from": lo, "to": hi}).status_code == 404
    r = _post(env, {"targets": [{"url": "http://127.0.0.1:9"}], "from": lo, "to": hi})
    assert r.status_code == 502 and "127.0.0.1:9" in r.json()["detail"]
    assert _post(env, {"vm": "db-01", "from": hi, "to": lo}).status_code == 400
    settings = ServerSettings.model_validate({"pcap": {"audit_log": str(env["tmp"] / "audit2.jsonl")}})
    with serve_app(settings) as url:
        r = httpx.post(url + "/api/v1/pcap", json={"vm": "db-01", "from": lo, "to": hi})
    assert r.status_code == 400 and "no inventory" in r.json()["detail"]

"""Sessions and packet plans: arrivals, ports, incidents, and TCP sequence/ack consistency."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from cloudtap.schema.flow import (
    CLOSE_CLIENT_RST,
    CLOSE_FIN,
    CLOSE_SERVER_REFUSED,
    CLOSE_SYN_UNANSWERED,
)
from cloudtap.synth import _dtypes as dt
from cloudtap.synth import builtin_scenario
from cloudtap.synth.cloud import build_cloud
from cloudtap.synth.scenario import scenario_from_dict, with_overrides
from cloudtap.synth.sessions import EPHEMERAL_LOW, build_sessions, occurrences, plan_packets

BASE = {
    "seed": 3,
    "duration": 600,
    "cloud": {
        "hosts": 3,
        "projects": [
            {"name": "a", "vms": [{"role": "web", "count": 4}, {"role": "db", "count": 2}]},
            {"name": "b", "vms": [{"role": "web", "count": 2}, {"role": "db", "count": 1}]},
        ],
    },
    "services": [
        {
            "name": "sql",
            "clients": "*/web",
            "servers": "*/db",
            "same_project": True,
            "port": 5432,
            "rate": 2,
            "requests": [1, 5],
            "response_bytes": [100, 50000],
        },
        {"name": "dns", "proto": "udp", "clients": "*", "servers": "b/db", "port": 53, "rate": 1},
        {
            "name": "ping",
            "proto": "icmp",
            "clients": "a/db",
            "servers": "*/web",
            "rate": 0.5,
            "requests": [2, 3],
        },
    ],
}


@pytest.fixture(scope="module")
def built():
    scn = scenario_from_dict(BASE)
    cloud = build_cloud(scn)
    sessions = build_sessions(scn, cloud)
    end = scn.start_ns + scn.duration_ns
    plan, hs_times, trunc = plan_packets(sessions, end, 1460)
    return scn, cloud, sessions, plan, hs_times, trunc


def test_poisson_arrivals_and_sorted_starts(built) -> None:
    scn, _, sessions, *_ = built
    c = sessions.cols
    n_sql = int((c["svc"] == 0).sum())
    assert abs(n_sql - 1200) < 160  # 2/s over 600 s, +-4 sigma
    assert np.all(np.diff(c["start_ns"]) >= 0)
    assert c["start_ns"].min() >= scn.start_ns and c["start_ns"].max() < scn.start_ns + scn.duration_ns


def test_same_project_pairs_and_no_self_talk(built) -> None:
    _, cloud, sessions, *_ = built
    c = sessions.cols
    sql = c["svc"] == 0
    assert np.all(cloud.vm_project[c["client"][sql]] == cloud.vm_project[c["server"][sql]])
    assert np.all(c["client"] != c["server"])


def test_client_ports_are_ephemeral_and_unique_per_client(built) -> None:
    _, _, sessions, *_ = built
    c = sessions.cols
    l4 = c["kind"] != dt.KIND_ICMP
    ports = c["cport"][l4]
    assert ports.min() >= EPHEMERAL_LOW and ports.max() <= 60999
    pairs = np.stack([c["client"][l4], ports.astype(np.int64)], axis=1)
    assert np.unique(pairs, axis=0).shape[0] == pairs.shape[0]
    icmp = ~l4
    assert np.all(c["sport"][icmp] == c["cport"][icmp])


def test_plan_is_time_sorted_and_within_the_scenario(built) -> None:
    scn, _, sessions, plan, _, _ = built
    assert np.all(np.diff(plan["ts"]) >= 0)
    assert plan["ts"].max() < scn.start_ns + scn.duration_ns
    assert set(np.unique(plan["proto"])) == {1, 6, 17}
    assert np.unique(plan["sess"]).size == len(sessions)


def test_tcp_sequence_and_ack_progression(built) -> None:
    _, _, sessions, plan, _, _ = built
    c = sessions.cols
    tcp = plan[plan["proto"] == 6]
    refused = np.flatnonzero(c["close"] == CLOSE_SERVER_REFUSED)
    tcp = tcp[~np.isin(tcp["sess"], refused)]
    order = np.lexsort((np.arange(tcp.size), tcp["dir"], tcp["sess"]))
    nxt: dict[tuple[int, int], int] = {}
    last_ack: dict[tuple[int, int], int] = {}
    checked = 0
    for r in tcp[order]:
        key = (int(r["sess"]), int(r["dir"]))
        seq, plen, flags = int(r["seq"]), int(r["plen"]), int(r["flags"])
        end = (seq + plen + bool(flags & 0x02) + bool(flags & 0x01)) & 0xFFFFFFFF
        if key in nxt and not flags & 0x02:
            if r["retrans"]:
                assert (seq + plen) & 0xFFFFFFFF == nxt[key]  # resends the last segment sent
            else:
                assert seq == nxt[key], "sequence gap or overlap"
                checked += 1
        if not r["retrans"]:
            nxt[key] = end
        if flags & 0x10 and not flags & 0x04:
            assert (int(r["ack"]) - last_ack.get(key, int(r["ack"]))) & 0xFFFFFFFF < 1 << 31, "ACK went back"
            last_ack[key] = int(r["ack"])
    assert checked > 10_000


def test_acks_never_exceed_what_the_peer_sent(built) -> None:
    _, _, _, plan, _, _ = built
    tcp = plan[(plan["proto"] == 6) & ((plan["flags"] & 0x14) == 0x10)]
    sent: dict[tuple[int, int], int] = {}
    for r in plan[plan["proto"] == 6]:  # time order
        key = (int(r["sess"]), int(r["dir"]))
        end = (int(r["seq"]) + int(r["plen"]) + bool(r["flags"] & 0x03)) & 0xFFFFFFFF
        if (end - sent.get(key, end)) & 0xFFFFFFFF < 1 << 31:
            sent[key] = end
        if r["flags"] & 0x10 and not r["flags"] & 0x04:
            peer = sent[(int(r["sess"]), 1 - int(r["dir"]))]
            assert (peer - int(r["ack"])) & 0xFFFFFFFF < 1 << 31, "ACK of data not yet sent"
    assert tcp.size > 1000


def test_close_mix_and_handshake_times(built) -> None:
    _, _, sessions, plan, hs_times, trunc = built
    c = sessions.cols
    tcp = c["proto"] == 6
    closes = np.bincount(c["close"][tcp], minlength=6)
    assert closes[CLOSE_FIN] > 0.9 * tcp.sum()
    done = tcp & (c["close"] == CLOSE_FIN) & (trunc == 0)
    assert np.array_equal(hs_times[done, 1] - hs_times[done, 0], c["hs"][done])
    assert np.array_equal(hs_times[done, 2] - hs_times[done, 1], c["hc"][done])
    hs_us, hc_us = c["hs"][tcp] / 1000, c["hc"][tcp] / 1000
    assert hs_us.min() >= 50 and hs_us.max() <= 500 and hc_us.min() >= 20 and hc_us.max() <= 200


def test_unanswered_syn_retries_back_off() -> None:
    data = {
        **BASE,
        "services": [
            {
                **BASE["services"][0],
                "faults": {
                    "unanswered": 1.0,
                    "refused": 0,
                    "client_rst": 0,
                    "server_rst": 0,
                    "syn_retries": [3, 3],
                },
            }
        ],
    }
    scn = scenario_from_dict(data)
    sessions = build_sessions(scn, build_cloud(scn))
    plan, _, trunc = plan_packets(sessions, scn.start_ns + scn.duration_ns, 1460)
    assert np.all(sessions.cols["close"] == CLOSE_SYN_UNANSWERED)
    s = int(np.flatnonzero(trunc == 0)[0])
    rows = plan[plan["sess"] == s]
    assert list(rows["flags"]) == [0x02] * 4 and list(rows["retrans"]) == [0, 1, 1, 1]
    assert list(np.diff(rows["ts"])) == [1_000_000_000, 2_000_000_000, 4_000_000_000]
    assert np.all(rows["dir"] == 0)


def test_backup_every_hour_at_the_top_of_the_hour() -> None:
    scn = builtin_scenario("small-cloud")
    inc = scn.incidents[0]
    assert occurrences(inc, scn) == [0.0, 3600.0, 7200.0]
    late = with_overrides(scn, start=datetime(2026, 11, 20, 0, 20, tzinfo=UTC))
    assert occurrences(inc, late) == [2400.0, 6000.0, 9600.0]


def test_backup_is_one_way_bulk() -> None:
    scn = with_overrides(builtin_scenario("small-cloud"), duration=240)
    cloud = build_cloud(scn)
    sessions = build_sessions(scn, cloud)
    plan, _, trunc = plan_packets(sessions, scn.start_ns + scn.duration_ns, 1460)
    s = int(np.flatnonzero(sessions.cols["kind"] == dt.KIND_BULK)[0])
    rows = plan[plan["sess"] == s]
    c2s, s2c = rows[rows["dir"] == 0], rows[rows["dir"] == 1]
    assert np.all(s2c["plen"] == 0)  # pure ACKs back
    assert c2s["plen"].sum() >= 2e6 / 8 * 180  # 2 Mbit/s for 3 minutes
    assert 170e9 < c2s["ts"].max() - c2s["ts"].min() < 200e9
    assert cloud.vm_names[sessions.cols["client"][s]] == "db-01" and trunc[s] == 0


def test_scan_probes_open_and_closed_ports() -> None:
    data = {
        **BASE,
        "incidents": [
            {
                "kind": "scan",
                "from_vm": "b/web-01",
                "targets": "a/db",
                "ports": [5430, 5434],
                "at": 10,
                "rate_pps": 100,
            }
        ],
    }
    scn = scenario_from_dict(data)
    sessions = build_sessions(scn, build_cloud(scn))
    c = sessions.cols
    scan = c["kind"] == dt.KIND_SCAN
    assert scan.sum() == 2 * 5
    open_ = c["sport"][scan] == 5432
    assert np.all(c["close"][scan][open_] == CLOSE_CLIENT_RST)
    assert np.all(c["close"][scan][~open_] == CLOSE_SERVER_REFUSED)


def test_burst_multiplies_a_service_rate_for_its_window() -> None:
    data = {
        **BASE,
        "incidents": [
            {
                "kind": "burst",
                "service": "dns",
                "at": "2m",
                "duration": "1m",
                "multiplier": 21,
                "name": "dns-storm",
            }
        ],
    }
    scn = scenario_from_dict(data)
    sessions = build_sessions(scn, build_cloud(scn))
    c = sessions.cols
    burst = c["incident"] == sessions.incident_names.index("dns-storm")
    assert abs(int(burst.sum()) - 1200) < 160  # 1/s x 20 extra over 60 s
    offs = (c["start_ns"][burst] - scn.start_ns) / 1e9
    assert offs.min() >= 120 and offs.max() < 180
    assert np.all(c["svc"][burst] == sessions.svc_names.index("dns"))


def test_empty_traffic_gives_no_sessions() -> None:
    scn = scenario_from_dict({**BASE, "services": []})
    sessions = build_sessions(scn, build_cloud(scn))
    plan, _, _ = plan_packets(sessions, scn.start_ns + scn.duration_ns, 1460)
    assert len(sessions) == 0 and plan.size == 0


def test_same_seed_same_sessions() -> None:
    scn = scenario_from_dict(BASE)
    a = build_sessions(scn, build_cloud(scn))
    b = build_sessions(scn, build_cloud(scn))
    assert all(np.array_equal(a.cols[k], b.cols[k]) for k in a.cols)
    other = build_sessions(with_overrides(scn, seed=4), build_cloud(scn))
    assert not np.array_equal(a.cols["start_ns"][:10], other.cols["start_ns"][:10])

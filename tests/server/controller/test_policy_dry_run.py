"""Policy dry-run against stored flows equals what the applied policy then captures from the same traffic.

A synthetic cloud (``small-cloud``, 20 s) is imported into a real chDB store, tagged by its static inventory.
One agent is registered per hypervisor. The dry-run of a capture policy selecting some VMs is compared with
the same capture metered again through the filter the policy compiles to on those agents (the OR of their
BPF selections: one capture point seeing every host, as the import did): flows, packets and bytes are equal.
For a distribution policy ``from_vm``, packets equal the capture through ``ether src`` of the selected VMs,
forwarded bytes without truncation equal the frame bytes, and caps and fuses trip as their thresholds say.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from access_helpers import grant
from cloudtap.server.api.app import create_app
from cloudtap.server.settings import ServerSettings

SELECT = {"vm": "db-*"}
DURATION_S = 20


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    from cloudtap.synth.inventory import write_static_inventory
    from cloudtap.synth.scenario import resolve_scenario, with_overrides
    from cloudtap.synth.writer import write_pcap

    root = tmp_path_factory.mktemp("dry-run")
    scn = with_overrides(resolve_scenario("small-cloud"), duration=f"{DURATION_S}s")
    result = write_pcap(scn, root / "s.pcap")
    return SimpleNamespace(
        scenario=scn, pcap=result.path, inventory=write_static_inventory(scn, root / "inv.yaml")
    )


@pytest.fixture
def env(open_store: Any, tmp_path: Path, capture: SimpleNamespace) -> Iterator[SimpleNamespace]:
    from cloudtap.server.importer import import_tables

    settings = ServerSettings.model_validate({
        "inventory": {"static_file": str(capture.inventory)},
        "controller": {"db_path": str(tmp_path / "ctl.sqlite")},
        "auth": {"db_path": str(tmp_path / "access.sqlite"), "audit_log": str(tmp_path / "audit.jsonl")},
    })  # fmt: skip
    app = create_app(settings, open_store())
    with TestClient(app) as client:
        admin = grant(app)
        assert (
            client.get("/api/v1/inventory/vm", headers=admin).status_code == 200
        )  # the inventory is installed
        imported = import_tables([capture.pcap])
        app.state.ingestor.ingest_tables(imported.tables, imported.key)  # tagged by the inventory
        for host in app.state.inventory.current().hosts:
            body = {"name": f"agent-{host.name}", "hostname": host.name, "machine_id": f"m-{host.name}"}
            assert client.post("/api/v1/agents/register", json=body).status_code == 200
        start = capture.scenario.start.timestamp()
        yield SimpleNamespace(app=app, client=client, admin=admin, window=(start, start + DURATION_S + 120),
                              shop=grant(app, "operator", ["shop"], name="shop-op"))  # fmt: skip


def dry(
    env: SimpleNamespace, kind: str, policy: dict[str, Any], headers: Any = None, **extra: Any
) -> dict[str, Any]:
    body = {"kind": kind, "policy": policy, "time_from": env.window[0], "time_to": env.window[1], **extra}
    r = env.client.post("/api/v1/policies/dry-run", json=body, headers=headers or env.admin)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def metered(pcap: Path, bpf: str) -> dict[str, int]:
    """The capture metered through ``bpf``, as the import meters (flows: those with packets)."""
    from cloudtap.meter import meter_file

    flows = meter_file(pcap, bpf=bpf).flows
    packets = flows["packets_c2s"].astype(np.int64) + flows["packets_s2c"]
    return {"flows": len(np.unique(flows["flow_id"][packets > 0])), "packets": int(packets.sum()),
            "bytes": int(flows["bytes_c2s"].sum() + flows["bytes_s2c"].sum()),
            "frame_bytes": int(flows["l2_bytes_c2s"].sum() + flows["l2_bytes_s2c"].sum())}  # fmt: skip


def test_capture_dry_run_equals_the_capture_under_the_applied_policy(
    env: SimpleNamespace, capture: Any
) -> None:
    policy = {"name": "dbs", "select": SELECT}
    figures = dry(env, "capture", policy)
    ctl = env.app.state.controller
    assert ctl.policies.all() == []  # nothing applied
    # apply it: the agents' compiled selections, OR-ed, are the filter of one capture point seeing every host
    assert env.client.put("/api/v1/policies/dbs", json=policy, headers=env.admin).status_code == 200
    compiled = [c for c in ctl.compiled().values() if c["bpf"]]
    assert len(compiled) >= 2  # the db VMs sit on different hosts
    union = " or ".join(f"({c['bpf']})" for c in compiled)
    truth = metered(capture.pcap, union)
    assert truth["flows"] > 10
    assert {k: figures["totals"][k] for k in truth} == truth
    per_agent = {a["agent"]: a for a in figures["agents"]}
    for c in compiled:
        assert sorted(per_agent[c["name"]]["vms"]) == sorted(c["vms"])
        assert per_agent[c["name"]]["interfaces"] == c["interfaces"]
    assert figures["vms"] == sum(len(c["vms"]) for c in compiled) == 2
    # storage: the same flows, and the bytes kept per packet bounded by the snaplen
    stored = dry(env, "storage", {**policy, "action": {"store_packets": True, "snaplen": 96}})
    assert stored["totals"] == figures["totals"] and 0 < stored["stored_bytes"] <= 96 * truth["packets"]


#: the synthetic cloud tags its frames (VLAN per project): filters say ``vlan and ...`` as tcpdump needs
FILTERS = [
    "vlan and tcp port 5432",
    "vlan and not tcp port 5432",
    "vlan and (udp or icmp)",
    "vlan 101 and src net 10.10.1.0/24",
]


@pytest.mark.parametrize("bpf", FILTERS)
def test_a_policy_filter_is_run_on_the_stored_flows(env: SimpleNamespace, capture: Any, bpf: str) -> None:
    policy = {"name": "dbs", "select": SELECT, "bpf": bpf}
    figures = dry(env, "capture", policy)
    assert figures["bpf_evaluated"] is True
    assert env.client.put("/api/v1/policies/dbs", json=policy, headers=env.admin).status_code == 200
    compiled = [c for c in env.app.state.controller.compiled().values() if c["bpf"]]
    # one capture point seeing every host: the agents' selections OR-ed, then the policy's filter (written once:
    # libpcap's ``vlan`` shifts the offsets of everything after it, the other alternatives of an ``or`` too)
    macs = sorted(m for c in compiled for m in c["macs"])
    truth = metered(capture.pcap, f"({' or '.join(f'ether host {m}' for m in macs)}) and ({bpf})")
    assert truth["packets"] > 0
    assert {k: figures["totals"][k] for k in truth} == truth
    # a distribution policy sending what the selected VMs send and the filter accepts
    snap = env.app.state.controller.inventory()
    macs = sorted(
        i.mac for v in snap.vms if v.name.startswith("db-") for i in snap.interfaces if i.vm == v.key
    )
    sent = metered(capture.pcap, f"({' or '.join(f'ether src {m}' for m in macs)}) and ({bpf})")
    dist = {"name": "dbs", "select": SELECT, "bpf": bpf, "direction": "from_vm", "destinations": ["ids-1"]}
    forwarded = dry(env, "distribution", dist, destinations=[{"name": "ids-1", "address": "192.0.2.10"}])
    assert forwarded["totals"]["packets"] == sent["packets"] and forwarded["totals"]["bytes"] == sent["bytes"]
    assert forwarded["destinations"][0]["peak_bps"] > 0 or sent["packets"] == 0
    if bpf.startswith("vlan and ") and " not " not in bpf:  # the broker matches on tagged frames too (as
        # `E or (vlan and (E))`: a negation is true on any tagged frame, so only positive filters lose `vlan`)
        plain = dry(env, "distribution", {**dist, "bpf": bpf.removeprefix("vlan and ")},
                    destinations=[{"name": "ids-1", "address": "192.0.2.10"}])  # fmt: skip
        assert plain["totals"] == forwarded["totals"]


def test_distribution_dry_run_forwarded_figures_caps_and_fuses(env: SimpleNamespace, capture: Any) -> None:
    ctl = env.app.state.controller
    snap = ctl.inventory()
    macs = sorted(
        i.mac for v in snap.vms if v.name.startswith("db-") for i in snap.interfaces if i.vm == v.key
    )
    dest = {"name": "ids-1", "address": "192.0.2.10", "max_bps": 0}
    policy = {"name": "dbs", "select": SELECT, "direction": "from_vm", "destinations": ["ids-1"]}
    whole = dry(env, "distribution", policy, destinations=[dest], max_uplink_bps=10**15)
    truth = metered(capture.pcap, " or ".join(f"ether src {m}" for m in macs))
    assert whole["totals"]["packets"] == truth["packets"] and whole["totals"]["bytes"] == truth["bytes"]
    assert sum(a["forwarded_bytes"] for a in whole["agents"]) == truth["frame_bytes"]  # no truncation: frames
    (d,) = whole["destinations"]
    assert d["defined"] and d["peak_bps"] > 0 and d["cap_tripped"] is False and not whole["fuse_tripped"]
    assert whole["rollup"] == {"table": "edge_1s", "interval_s": 1}
    # a peak second never carries more than the window's bytes, nor less than their average
    assert (
        truth["frame_bytes"] * 8 / (DURATION_S + 1) <= d["peak_total_bps"] <= truth["frame_bytes"] * 8 * 1.01
    )
    cut = dry(env, "distribution", {**policy, "truncate": 64}, destinations=[{**dest, "max_bps": 1000}],
              max_uplink_bps=1000)  # fmt: skip
    (c,) = cut["destinations"]
    assert 0 < c["forwarded_bytes"] <= 64 * truth["packets"] and c["forwarded_bytes"] < d["forwarded_bytes"]
    assert c["peak_bps"] < d["peak_bps"] and c["cap_tripped"] and c["intervals_over_cap"] > 0
    assert cut["fuse_tripped"] and all(a["peak_host_bps"] >= a["peak_forwarded_bps"] for a in cut["agents"])
    # not defined, not sent: reported as undefined, no cap
    ghost = dry(env, "distribution", {**policy, "destinations": ["nowhere"]})
    assert ghost["destinations"][0]["defined"] is False and not ghost["destinations"][0]["cap_tripped"]


def test_a_project_operator_dry_runs_through_their_scope(env: SimpleNamespace) -> None:
    policy = {"name": "shop-dbs", "select": {"project": "shop", **SELECT}, "destinations": ["ids-1"]}
    dest = [{"name": "ids-1", "address": "192.0.2.10"}]
    mine = dry(env, "distribution", policy, env.shop, destinations=dest)
    everyone = dry(env, "distribution", policy, env.admin, destinations=dest)
    assert mine["totals"]["packets"] > 0
    # the host's own traffic (for the fuse) counts only what the operator may read: less than the admin sees
    peak = {a["agent_id"]: a["peak_host_bps"] for a in everyone["agents"]}
    assert all(a["peak_host_bps"] <= peak[a["agent_id"]] for a in mine["agents"])
    assert sum(a["peak_host_bps"] for a in mine["agents"]) < sum(peak.values())
    other = env.client.post("/api/v1/policies/dry-run", headers=env.shop, json={
        "kind": "capture", "policy": {"name": "x", "select": {"project": "analytics"}}})  # fmt: skip
    assert other.status_code == 403 and "outside your scope" in other.json()["detail"]

"""Payload per policy: ``action.payload_bytes`` / ``action.requests`` validated, compiled into the agent's
``policy.filters`` beside the ORed ``bpf``, turned into one kernel program whose verdicts are the OR of the
policies' own filters, and driven from the API and ``cloudtap fleet policy add --payload-bytes``."""

from __future__ import annotations

import json
import struct
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from access_helpers import grant
from cloudtap.agent.config import AgentConfig
from cloudtap.capture.bpf import FrameFilter
from cloudtap.capture.frames import FrameBatch
from cloudtap.capture.policy_filter import HEADER_BYTES, PolicyFilter
from cloudtap.cli.main import app as cli_app
from cloudtap.inventory.model import VM, Host, Interface, Project, Snapshot
from cloudtap.server.controller.compiler import compile_policies
from cloudtap.server.controller.policy import Action, Policy
from cloudtap.server.controller.registry import AgentRecord

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "cli"))
from auth_server import serve, settings_for, token_of  # noqa: E402

WEB, DB, CACHE = "fa:16:3e:00:00:01", "fa:16:3e:00:00:02", "fa:16:3e:00:00:03"


def cloud() -> Snapshot:
    """One hypervisor with a web, a db and a cache VM."""
    return Snapshot(
        source="test", taken_at=1, projects=[Project("p-shop", "shop")], hosts=[Host("hv-a", "hv-a")],
        vms=[VM("v-web", "web-01", "p-shop", "hv-a", "ACTIVE"), VM("v-db", "db-01", "p-shop", "hv-a", "ACTIVE"),
             VM("v-cache", "cache-01", "p-shop", "hv-a", "ACTIVE")],
        interfaces=[Interface("i-web", WEB, ("10.10.1.5",), "v-web", device="tapweb"),
                    Interface("i-db", DB, ("10.10.1.6",), "v-db", device="tapdb"),
                    Interface("i-cache", CACHE, ("10.10.1.7",), "v-cache", device="tapcache")],
    )  # fmt: skip


AGENTS = [AgentRecord("A", "a", "hv-a", "m")]


def test_action_fields_and_their_errors() -> None:
    assert Action().payload_bytes == 0 and not Action().parses_requests
    assert Action(payload_bytes=512).parses_requests
    assert not Action(payload_bytes=512, requests=False).parses_requests
    assert not Action(payload_bytes=512, capture=False).parses_requests
    with pytest.raises(ValidationError, match="needs payload_bytes > 0"):
        Action(requests=True)
    with pytest.raises(ValidationError, match="less than or equal to 9000"):
        Action(payload_bytes=9001)
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        Action(payload_bytes=-1)


def test_filters_are_sent_only_when_a_policy_keeps_payload() -> None:
    headers = Policy(name="dbs", select={"vm": "db-*"}, bpf="tcp port 5432")
    web = Policy(name="web", select={"vm": "web-*"}, action={"payload_bytes": 512})
    plain = compile_policies(cloud(), [headers], AGENTS).agents["A"].section()
    assert "filters" not in plain  # agents older than policy.filters keep working
    section = compile_policies(cloud(), [headers, web], AGENTS).agents["A"].section()
    assert section["bpf"] == f"((ether host {DB}) and (tcp port 5432)) or (ether host {WEB})"  # as before
    assert section["snaplen"] is None  # the agent-wide snap length stays header-only
    assert section["filters"] == [
        {"policy": "dbs", "select": f"ether host {DB}", "bpf": "tcp port 5432", "snaplen": None, "requests": False,
         "payload_bytes": 0},
        {"policy": "web", "select": f"ether host {WEB}", "bpf": None, "snaplen": HEADER_BYTES + 512, "requests": True,
         "payload_bytes": 512},
    ]  # fmt: skip
    cfg = AgentConfig.model_validate({"policy": section})  # the agent accepts the section as sent
    flt = PolicyFilter.from_entries(cfg.policy.filters, cfg.capture.bpf, cfg.capture.snaplen)
    assert flt is not None and flt.snaplens == [HEADER_BYTES + 512, cfg.capture.snaplen] and flt.requests


def _frame(src_mac: str, dst_mac: str, vlan: int | None, proto: int, dport: int, payload: int = 0) -> bytes:
    eth = bytes.fromhex(dst_mac.replace(":", "") + src_mac.replace(":", ""))
    tag = struct.pack("!HH", 0x8100, vlan) if vlan is not None else b""
    l4 = (struct.pack("!HHIIHHHH", 40000, dport, 0, 0, 0x5010, 0, 0, 0) if proto == 6
          else struct.pack("!HHHH", 40000, dport, 8 + payload, 0)) + bytes(payload)  # fmt: skip
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, 0, 64, proto, 0, bytes([10, 0, 0, 1]),
                     bytes([10, 0, 0, 2]))  # fmt: skip
    return eth + tag + struct.pack("!H", 0x0800) + ip + l4


def _batch(frames: list[bytes]) -> FrameBatch:
    lens = np.array([len(f) for f in frames], np.uint32)
    return FrameBatch(data=np.frombuffer(b"".join(frames), np.uint8).copy(),
                      offset=np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64), cap_len=lens.copy(),
                      wire_len=lens.copy(), ts_ns=np.zeros(len(frames), np.int64),
                      linktype=np.ones(len(frames), np.uint16), interface=np.zeros(len(frames), np.uint16))  # fmt: skip


def test_the_combined_program_is_the_or_of_the_policies_even_with_two_vlan_policies() -> None:
    """Two policies using ``vlan``, ORed by libpcap in one expression, shift each other's offsets (the compiler
    can put only one of them last); the per-policy program starts each policy afresh."""
    policies = [Policy(name="web", select={"vm": "web-*"}, bpf="vlan 100 and tcp port 80", action={"payload_bytes": 256}),
                Policy(name="db", select={"vm": "db-*"}, bpf="vlan 200 and tcp port 5432"),
                Policy(name="cache", select={"vm": "cache-*"}, bpf="udp port 11211", action={"payload_bytes": 64})]  # fmt: skip
    section = compile_policies(cloud(), policies, AGENTS).agents["A"].section()
    frames = [_frame(WEB, DB, 100, 6, 80), _frame(DB, WEB, 200, 6, 5432), _frame(DB, CACHE, None, 17, 11211, 400),
              _frame(WEB, DB, 200, 6, 80), _frame(DB, WEB, None, 6, 5432), _frame(CACHE, WEB, 100, 6, 80),
              _frame("02:00:00:00:00:09", DB, 200, 6, 5432)]  # fmt: skip
    batch = _batch(frames)
    singles = np.array(
        [FrameFilter(f"({f['select']}) and ({f['bpf']})").mask(batch) for f in section["filters"]]
    )
    union = singles.any(axis=0)
    assert union.tolist() == [True, True, True, False, False, True, True]
    assert FrameFilter(section["bpf"]).mask(batch).tolist() != union.tolist()  # the old ORed string
    flt = PolicyFilter.from_entries(section["filters"], default_snaplen=128)
    assert flt is not None
    keep, part = flt.classify(batch)
    assert np.array_equal(keep > 0, union)
    names = [flt.parts[i].policy if i >= 0 else None for i in part.tolist()]
    assert names == ["web", "db", "cache", None, None, "web", "db"]
    assert keep.tolist() == [HEADER_BYTES + 256, 128, HEADER_BYTES + 64, 0, 0, HEADER_BYTES + 256, 128]


runner = CliRunner()


@pytest.fixture()
def served(
    open_store: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, Any, Any]]:
    monkeypatch.setenv(
        "CLOUDTAP_CREDENTIALS", str(tmp_path / "home" / "credentials.yaml")
    )  # never the real one
    for name in ("CLOUDTAP_TOKEN", "CLOUDTAP_SERVER", "CLOUDTAP_CA"):
        monkeypatch.delenv(name, raising=False)
    from cloudtap.server.api.app import create_app
    from cloudtap.server.importer import import_tables
    from cloudtap.synth.inventory import write_static_inventory
    from cloudtap.synth.scenario import resolve_scenario, with_overrides
    from cloudtap.synth.writer import write_pcap

    scn = with_overrides(resolve_scenario("small-cloud"), duration="5s")
    pcap = write_pcap(scn, tmp_path / "s.pcap").path
    inventory = write_static_inventory(scn, tmp_path / "inv.yaml")
    app = create_app(
        settings_for(tmp_path / "server", inventory={"static_file": str(inventory)}), open_store()
    )
    with serve(app) as url:
        imported = import_tables([pcap])
        app.state.ingestor.ingest_tables(imported.tables, imported.key)
        import httpx

        for host in app.state.inventory.current().hosts:  # one agent per hypervisor
            body = {"name": f"agent-{host.name}", "hostname": host.name, "machine_id": f"m-{host.name}"}
            assert httpx.post(f"{url}/api/v1/agents/register", json=body).status_code == 200
        yield url, app, scn


def cli(*args: str, code: int = 0) -> Any:
    result = runner.invoke(cli_app, list(args))
    assert result.exit_code == code, result.output
    return result


def test_payload_from_the_api_and_the_command_line(served: tuple[str, Any, Any]) -> None:
    import httpx

    url, app, scn = served
    admin = grant(app, "operator")
    op = ["--server", url, "--token", token_of(admin)]
    with httpx.Client(base_url=url, headers=admin) as client:
        for action, words in (({"payload_bytes": 20000}, "less than or equal to 9000"),
                              ({"requests": True}, "requests: true needs payload_bytes > 0"),
                              ({"payload_bytes": "lots"}, "valid integer")):  # fmt: skip
            r = client.put("/api/v1/policies/dbs", json={"select": {"vm": "db-*"}, "action": action})
            assert r.status_code == 422 and words in r.text, r.text
            assert r.json()["detail"][0]["loc"][:2] == ["body", "action"]
    assert app.state.controller.policies.all() == []  # nothing stored by a refused request
    start = str(int(scn.start.timestamp()))
    window = ["--from", start, "--to", str(int(start) + 120)]
    args = ["fleet", "policy", "add", "dbs", "--vm", "db-*", "--payload-bytes", "512"]
    out = cli(*args, "--dry-run", *window, *op).output
    assert "dry-run of capture policy 'dbs'" in out and "nothing applied" in out
    assert f"payload: 512 bytes of L4 payload kept per packet (snaplen {HEADER_BYTES + 512})" in out
    assert "application requests parsed" in out
    answer = json.loads(cli(*args, "--no-requests", "--dry-run", "--json", *window, *op).stdout)
    assert (
        answer["payload_bytes"] == 512 and answer["snaplen"] == HEADER_BYTES + 512 and not answer["requests"]
    )
    assert 0 < answer["captured_bytes"] <= answer["totals"]["frame_bytes"]
    assert app.state.controller.policies.all() == []
    saved = cli(*args, "--no-requests", *op).output
    assert "dbs saved" in saved and "application requests not parsed" in saved
    [policy] = app.state.controller.policies.all()
    assert policy.action.payload_bytes == 512 and policy.action.requests is False
    compiled = [c for c in app.state.controller.compiled().values() if c.get("filters")]
    assert compiled and all(f["snaplen"] == HEADER_BYTES + 512 and not f["requests"]
                            for c in compiled for f in c["filters"])  # fmt: skip
    cli("fleet", "policy", "add", "dbs", "--vm", "db-*", "--payload-bytes", "0", "--requests", *op, code=1)


def test_the_preview_shows_the_payload_change_and_the_agents_it_touches() -> None:
    from cloudtap.server.controller.preview import policy_preview

    old = Policy(name="web", select={"vm": "web-*"})
    new = Policy(name="web", select={"vm": "web-*"}, action={"payload_bytes": 256})
    answer = policy_preview(cloud(), [old], new, "web", AGENTS)
    assert answer["changed"] and '-    "payload_bytes": 0,' in answer["diff"] and '+    "payload_bytes": 256,' in answer["diff"]
    assert [a["agent_id"] for a in answer["agents"]] == ["A"]  # its policy section changes (filters appear)
    assert answer["agents"][0]["added"] == [] and answer["agents"][0]["removed"] == []

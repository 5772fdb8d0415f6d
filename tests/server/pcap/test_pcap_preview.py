"""POST /api/v1/pcap/preview: the size of a retrieval before downloading it, with no packets sent.

A replay agent with a packet store behind a real HTTP server: the preview's packets and bytes equal what
the download with the same body then delivers (``X-Cloudtap-Packets``, ``Content-Length``, tshark's
count); over the size cap it answers 200 with ``over_cap`` instead of a 413. It needs ``pcap:read``
(401 without credentials, 403 for a viewer), keeps a project-bound caller to its projects' VMs, and
every preview, served or refused, is one ``pcap.preview`` audit record naming the user.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pcap_env import AGENT_KEY, replay_agent, serve, synth

from access_helpers import grant
from cloudtap.server.audit import audit_of
from cloudtap.server.pcap import StaticTargets, Target
from cloudtap.server.settings import ServerSettings


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("pcap-preview")
    original = synth(tmp / "cloud.pcap", duration="30s")
    settings = ServerSettings.model_validate(
        {"pcap": {"spool_directory": str(tmp / "spool"), "max_bytes": 64 << 20},
         "auth": {"db_path": str(tmp / "access.sqlite"), "audit_log": str(tmp / "audit.jsonl")},
         "controller": {"db_path": str(tmp / "ctl.sqlite")}}
    )  # fmt: skip
    with replay_agent(original, tmp / "a", "hv-a") as agent:
        targets = StaticTargets(
            {"db-01": [Target(agent.control.url, (), "hv-a", key=AGENT_KEY)],
             "dead-01": [Target("http://127.0.0.1:9", key=AGENT_KEY)]}
        )  # fmt: skip
        with serve(settings, targets) as served:
            users = {
                "alice": grant(served.app, "operator", name="alice"),
                "shop-op": grant(served.app, "operator", ["shop"], name="shop-op"),
                "viewer": grant(served.app, "viewer", name="vera"),
            }
            idx = agent.packet_store.index()
            lo, hi = int(idx["min_ts"].min()), int(idx["max_ts"].max())
            yield {"tmp": tmp, "url": served.url, "users": users, "audit": audit_of(served.app),
                   "window": (lo + (hi - lo) // 4, lo + (hi - lo) // 2)}  # fmt: skip


def _post(env: dict[str, Any], path: str, body: dict[str, Any], user: str = "alice") -> httpx.Response:
    with httpx.Client(timeout=60) as client:
        return client.post(env["url"] + "/api/v1/pcap" + path, json=body, headers=env["users"].get(user, {}))


def _previews(env: dict[str, Any]) -> list[dict[str, Any]]:
    return env["audit"].read(action="pcap.preview")  # type: ignore[no-any-return]


def test_preview_announces_exactly_what_the_download_delivers(env: dict[str, Any]) -> None:
    lo, hi = env["window"]
    body = {"vm": "db-01", "from": lo, "to": hi, "filter": "tcp"}
    retrieved = len(env["audit"].read(action="pcap.retrieve"))
    preview = _post(env, "/preview", body)
    assert preview.status_code == 200, preview.text
    p = preview.json()
    assert p["over_cap"] is False and p["detail"] is None and p["packets"] > 100
    assert p["filename"] == "db-01.pcapng" and p["filter"] == "tcp" and p["max_bytes"] == 64 << 20
    assert p["targets"] == [{"agent": "hv-a", "interfaces": []}] and p["interfaces"]
    assert p["from"].endswith("Z") and p["to"] > p["from"]
    # the preview sent no packets and is not a retrieval
    assert len(env["audit"].read(action="pcap.retrieve")) == retrieved
    line = _previews(env)[-1]
    assert line["actor"] == "alice" and line["outcome"] == "ok" and line["status"] == 200
    assert line["packets"] == p["packets"] and line["bytes"] == p["bytes"] and line["vm"] == "db-01"
    # the download of the same body is what the preview announced
    download = _post(env, "", body)
    assert download.status_code == 200
    assert len(download.content) == p["bytes"] == int(download.headers["content-length"])
    assert int(download.headers["x-cloudtap-packets"]) == p["packets"]
    out = env["tmp"] / "preview.pcapng"
    out.write_bytes(download.content)
    shark = subprocess.run(["tshark", "-r", str(out), "-T", "fields", "-e", "frame.number"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    assert len(shark.stdout.split()) == p["packets"]
    assert not list(Path(env["tmp"] / "spool").glob("agent-*"))  # the preview's spool files are gone


def test_over_the_cap_is_an_answer_not_an_error(env: dict[str, Any]) -> None:
    lo, hi = env["window"]
    r = _post(env, "/preview", {"vm": "db-01", "from": lo, "to": hi, "max_bytes": 20_000})
    assert r.status_code == 200, r.text
    p = r.json()
    assert p["over_cap"] is True and p["packets"] is None and p["max_bytes"] == 20_000
    assert p["bytes"] >= 20_000 and "max_bytes=20000" in p["detail"]
    line = _previews(env)[-1]
    assert line["outcome"] == "ok" and line["over_cap"] is True


def test_preview_needs_pcap_read_and_keeps_to_the_callers_projects(env: dict[str, Any]) -> None:
    lo, hi = env["window"]
    body = {"vm": "db-01", "from": lo, "to": hi}
    before = len(_previews(env))
    assert _post(env, "/preview", body, user="nobody").status_code == 401
    assert _post(env, "/preview", body, user="viewer").status_code == 403  # no pcap:read
    assert len(_previews(env)) == before  # refused by the guard, before the route
    r = _post(env, "/preview", body, user="shop-op")
    assert r.status_code == 403 and "not in your projects" in r.json()["detail"]
    line = _previews(env)[-1]
    assert line["actor"] == "shop-op" and line["outcome"] == "refused" and line["status"] == 403
    r = _post(env, "/preview", {"agents": [{"agent": "hv-a"}], "from": lo, "to": hi}, user="shop-op")
    assert r.status_code == 403 and "every project" in r.json()["detail"]


def test_preview_errors_are_the_downloads(env: dict[str, Any]) -> None:
    lo, hi = env["window"]
    assert _post(env, "/preview", {"vm": "nope", "from": lo, "to": hi}).status_code == 404
    assert _post(env, "/preview", {"vm": "db-01", "from": hi, "to": lo}).status_code == 400
    r = _post(env, "/preview", {"vm": "db-01", "from": lo, "to": hi, "filter": "host and"})
    assert r.status_code in (400, 502) and "filter" in r.json()["detail"]
    started = time.monotonic()
    r = _post(env, "/preview", {"vm": "dead-01", "from": lo, "to": hi})
    assert r.status_code == 502 and "127.0.0.1:9" in r.json()["detail"] and time.monotonic() - started < 30
    line = _previews(env)[-1]
    assert line["actor"] == "alice" and line["outcome"] == "failed" and line["status"] == 502
    r = _post(env, "/preview", {"targets": [{"url": "http://127.0.0.1:9"}], "from": lo, "to": hi})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][:2] == ["body", "targets"]

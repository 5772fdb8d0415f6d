"""A real server (uvicorn on loopback, real chDB store, lifespans running) that has seen real traffic.

Built once per module: an agent registers, heartbeats, takes and answers a command, ships batches (one
of them twice, one refused); an admin queries (once wrongly), runs an analysis, asks for packets of an unknown VM;
the housekeeper runs one disk budget pass. ``Served`` keeps what was sent, for the tests to compare.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pyarrow as pa
import pytest
import uvicorn
from metrics_served import Served, free_port
from metrics_traffic import INVENTORY_CSV, batch, sizes

from access_helpers import grant
from cloudtap.server.api.app import create_app
from cloudtap.server.metrics import install_metrics
from cloudtap.server.settings import ServerSettings
from cloudtap.server.store.clickhouse import ClickHouseStore
from cloudtap.ship.wire import encode_batch

BOOT = "metrics-bootstrap-token"
_DATABASES = itertools.count()


def _traffic(served: Served) -> None:
    with httpx.Client(base_url=served.url, timeout=60) as http:
        def ok(r: httpx.Response) -> Any:
            assert r.status_code == 200, (r.request.url, r.status_code, r.text)
            return r.json()

        reg = ok(http.post("/api/v1/agents/register", headers={"Authorization": f"Bearer {BOOT}"},
                           json={"name": "agent-hv-m1", "hostname": "hv-m1", "machine_id": "m-hv-m1"}))  # fmt: skip
        agent = {"Authorization": f"Bearer {reg['credential']}"}
        base = f"/api/v1/agents/{reg['agent_id']}"
        ok(http.post(f"{base}/heartbeat", headers=agent, json={"capturing": True, "version": "test"}))
        ok(http.post(f"{base}/capture/stop", headers=served.admin))
        (command,) = ok(http.get(f"{base}/commands", params={"wait": 0}, headers=agent))["commands"]
        ok(http.post(f"{base}/commands/{command['id']}/result", headers=agent, json={"ok": True}))

        frames = [batch(seq) for seq in (1, 2, 3)]
        for frame in frames:
            assert not ok(http.post("/api/v1/ingest", content=frame, headers=agent))["duplicate"]
        assert ok(http.post("/api/v1/ingest", content=frames[1], headers=agent))["duplicate"]  # a resend
        unknown = encode_batch("agent-hv-m1", 4, {"edges_10s": pa.table({"time_ns": [1]})})
        assert http.post("/api/v1/ingest", content=unknown, headers=agent).status_code == 400
        served.rows, served.nbytes = sizes(frames)
        served.wire_bytes, served.batches = sum(len(f) for f in frames), len(frames)

        ok(http.get("/api/v1/query/top", params={"since": "1h", "group": "client_ip"}, headers=served.admin))
        bad = http.get("/api/v1/query/top", params={"by": "no_such_metric"}, headers=served.admin)
        assert bad.status_code == 422, bad.text
        minute = int(time.time()) // 60 * 60 + 60  # a window of whole minutes: the 1 min edges serve it
        window = {"time_from": minute - 3600, "time_to": minute, "level": "vm"}
        ok(http.post("/api/v1/analysis/topology", json=window, headers=served.admin))
        pcap = http.post("/api/v1/pcap", json={"vm": "no-such-vm", "from": "-10m"}, headers=served.admin)
        assert 400 <= pcap.status_code < 500, pcap.text
    served.app.state.housekeeper.run_once()


@pytest.fixture(scope="module")
def served(chdb_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("metrics-server")
    (tmp / "inventory.csv").write_text(INVENTORY_CSV)
    store = ClickHouseStore(chdb_dsn, database=f"metrics_tests_{next(_DATABASES)}")
    store.migrate()
    settings = ServerSettings.model_validate({
        "storage": {"database": store.database, "max_disk_gib": 1},
        "inventory": {"static_file": str(tmp / "inventory.csv"), "learn_from_agents": False},
        "controller": {"db_path": str(tmp / "ctl.sqlite"), "token": BOOT},
        "ingest": {"wal_dir": str(tmp / "wal")},
        "auth": {"db_path": str(tmp / "access.sqlite"), "audit_log": str(tmp / "audit.jsonl")},
    })  # fmt: skip
    app = create_app(settings, store)
    install_metrics(app)  # a no-op once create_app calls it
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="metrics-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the test server did not start"
        time.sleep(0.05)
    try:
        served = Served(app, f"http://127.0.0.1:{port}", grant(app, "admin"), grant(app, "viewer"),
                        grant(app, "viewer", ["metrics"]))  # fmt: skip
        _traffic(served)
        yield served
    finally:
        server.should_exit = True
        thread.join(30)
        store.close()

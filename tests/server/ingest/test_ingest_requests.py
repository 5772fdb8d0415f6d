"""Kind ``requests`` through the server's ingest: stored once, tagged with inventory ids, counted by kind."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from access_helpers import grant
from cloudtap.inventory.connectors.static import load_static
from cloudtap.inventory.store import InventoryStore
from cloudtap.inventory.tagging import Tagger
from cloudtap.server.api.app import create_app
from cloudtap.server.ingest import Ingestor
from cloudtap.server.settings import ServerSettings
from cloudtap.server.store.base import BatchKey
from cloudtap.ship.wire import encode_batch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "store"))
from request_batches import planted_requests, request_batch  # noqa: E402

#: The planted clients (10.0.0.1-3) are VMs of project "shop"; server 10.0.1.1 is a VM of "data", .2 is no VM
#: but inside data's subnet (tagged with the subnet's project, vm 0).
INVENTORY_CSV = (
    "name,project,host,ip,mac,network,subnet,cidr\n"
    + "".join(
        f"web-{i},shop,hv-1,10.0.0.{i},fa:16:3e:00:00:0{i},shop-net,shop-sub,10.0.0.0/24\n" for i in (1, 2, 3)
    )
    + "db-1,data,hv-2,10.0.1.1,fa:16:3e:00:01:01,data-net,data-sub,10.0.1.0/25\n"
)


def _app(store: Any, tmp_path: Path, coalesce_ms: float) -> Any:
    settings = ServerSettings.model_validate(
        {
            "ingest": {"coalesce_ms": coalesce_ms, "wal_dir": str(tmp_path / "wal")},
            "auth": {"db_path": str(tmp_path / "access.sqlite"), "audit_log": str(tmp_path / "audit.jsonl")},
        }
    )
    app = create_app(settings, store)
    app.state.test_auth = grant(app, "admin")
    return app


def _calls(app: Any, frames: list[bytes]) -> tuple[list[httpx.Response], str]:
    async def run() -> tuple[list[httpx.Response], str]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://t", headers=app.state.test_auth
        ) as c:
            answers = [await c.post("/api/v1/ingest", content=f) for f in frames]
            return answers, (await c.get("/metrics")).text

    return asyncio.run(run())


def _samples(text: str, name: str) -> dict[str, float]:
    return {
        s.labels.get("kind", ""): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


@pytest.mark.parametrize("coalesce_ms", [0, 20])
def test_requests_batch_is_stored_once_and_counted(
    open_store: Any, tmp_path: Path, coalesce_ms: float
) -> None:
    store = open_store()
    table = request_batch(planted_requests(400, seed=5), "hv-9")
    frame = encode_batch("hv-9", 1, {"requests": table})
    answers, metrics = _calls(_app(store, tmp_path, coalesce_ms), [frame, frame])  # the second is a replay
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    counts = store.query_arrow(
        "SELECT (SELECT count() FROM request_log) AS log, (SELECT sum(requests) FROM request_1m) AS m"
    ).to_pylist()[0]
    assert counts == {"log": 400, "m": 400}  # the replay stored nothing
    assert _samples(metrics, "cloudtap_server_ingest_rows_total")["requests"] == 400
    assert _samples(metrics, "cloudtap_server_ingest_acknowledged_rows_total")["requests"] == 800
    assert _samples(metrics, "cloudtap_server_ingest_bytes_total")["requests"] > 0


def test_requests_are_tagged_like_flows(open_store: Any, tmp_path: Path) -> None:
    store = open_store()
    path = tmp_path / "inventory.csv"
    path.write_text(INVENTORY_CSV)
    inventory = InventoryStore(store, backdate_first_sync=True)
    inventory.apply(load_static(path))
    ingestor = Ingestor(store, tagger=Tagger(inventory))
    records = planted_requests(300, seed=6)
    ingestor.ingest_tables({"requests": request_batch(records, "hv-9")}, BatchKey("hv-9", 1))
    assert ingestor.stats.tag_errors == 0
    rows = store.query_arrow(
        "SELECT IPv6NumToString(server_ip) AS s, c.name AS client_project, p.name AS server_project, "
        "count() AS n, min(client_vm_id) > 0 AS vm_known, any(server_vm_id) AS server_vm FROM request_log AS r "
        "LEFT JOIN inventory_names AS c ON c.kind = 'project' AND c.id = r.client_project_id "
        "LEFT JOIN inventory_names AS p ON p.kind = 'project' AND p.id = r.server_project_id "
        "GROUP BY s, client_project, server_project ORDER BY s"
    ).to_pylist()
    lo = records["server_lo"] & 0xFF
    assert rows == [
        {"s": "::ffff:10.0.1.1", "client_project": "shop", "server_project": "data", "n": int(np.sum(lo == 1)),
         "vm_known": 1, "server_vm": rows[0]["server_vm"]},
        {"s": "::ffff:10.0.1.2", "client_project": "shop", "server_project": "data", "n": int(np.sum(lo == 2)),
         "vm_known": 1, "server_vm": 0},
    ]  # fmt: skip
    assert rows[0]["server_vm"] > 0
    # the rollups carry the same ids (scope and group-by-service read them there)
    ids = store.query_arrow(
        "SELECT countIf(client_project_id = 0) AS untagged, uniqExact(server_project_id) AS servers FROM request_1m"
    ).to_pylist()[0]
    assert ids == {"untagged": 0, "servers": 1}

"""The ingest hook and the inventory API: flows stored with cloud ids, /api/v1/inventory routes."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from access_helpers import admin_client
from cloudtap.inventory.connectors.static import load_static
from cloudtap.inventory.store import InventoryStore
from cloudtap.inventory.tagging import Tagger
from cloudtap.server.ingest import Ingestor
from cloudtap.server.settings import ServerSettings


def _synth(tmp_path: Path):  # type: ignore[no-untyped-def]
    from cloudtap.server.importer import import_tables
    from cloudtap.synth.inventory import write_static_inventory
    from cloudtap.synth.scenario import resolve_scenario, with_overrides
    from cloudtap.synth.writer import write_pcap

    scn = with_overrides(resolve_scenario("small-cloud"), duration="20s")
    result = write_pcap(scn, tmp_path / "s.pcap")
    inv_path = write_static_inventory(scn, tmp_path / "inv.yaml")
    return scn, result, inv_path, import_tables([result.path])


def test_ingestor_tags_before_insert(open_store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    store = open_store()
    _, result, inv_path, imported = _synth(tmp_path)
    inv = InventoryStore(store)
    inv.apply(load_static(inv_path))
    ingestor = Ingestor(store, tagger=Tagger(inv))
    ingestor.ingest_tables(imported.tables, imported.key)
    rows = store.query_arrow(
        f"SELECT n.name AS vm, count() AS flows FROM {store.database}.flow_log AS f "
        f"INNER JOIN {store.database}.inventory_names AS n ON n.kind = 'vm' AND n.id = f.server_vm_id "
        "GROUP BY vm ORDER BY vm"
    ).to_pylist()
    expected: dict[str, int] = {}
    for vm in result.truth["server_vm"].to_pylist():
        expected[vm] = expected.get(vm, 0) + 1
    assert {r["vm"]: r["flows"] for r in rows} == expected
    untagged = store.command(f"SELECT count() FROM {store.database}.flow_log WHERE client_project_id = 0")
    assert int(untagged) == 0 and ingestor.stats.tag_errors == 0


def test_tagging_failure_stores_the_batch_untagged(open_store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    class Broken:
        def tag_tables(self, tables):  # type: ignore[no-untyped-def]
            raise RuntimeError("boom")

    store = open_store()
    _, result, _, imported = _synth(tmp_path)
    ingestor = Ingestor(store, tagger=Broken())
    stored = ingestor.ingest_tables(imported.tables, imported.key)
    assert stored.rows["flows"] == result.truth.num_rows
    assert ingestor.stats.tag_errors == 1 and "boom" in ingestor.stats.last_error


def test_inventory_api(open_store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from cloudtap.server.api.app import create_app
    from cloudtap.ship.wire import encode_batch

    store = open_store()
    scn, result, inv_path, imported = _synth(tmp_path)
    settings = ServerSettings.model_validate(
        {"inventory": {"static_file": str(inv_path)}, "controller": {"db_path": str(tmp_path / "ctl.sqlite")},
         "auth": {"db_path": str(tmp_path / "access.sqlite"), "audit_log": str(tmp_path / "audit.jsonl")}}
    )  # fmt: skip
    app = create_app(settings, store)
    assert TestClient(app).get("/api/v1/inventory/vm").status_code == 401
    with admin_client(app) as client:
        assert app.state.names.ids("project", "shop") == [app.state.inventory.id_of("project", "shop")]
        vms = client.get("/api/v1/inventory/vm", params={"name": "db-*"}).json()
        assert sorted(v["name"] for v in vms["items"]) == ["db-01", "db-02"]
        assert all(v["source"] == "static" and v["id"] > 0 for v in vms["items"])
        key = vms["items"][0]["key"]
        hist = client.get("/api/v1/inventory/vm/history", params={"key": key}).json()
        assert len(hist["intervals"]) == 1 and hist["intervals"][0]["valid_to"] is None
        status = client.get("/api/v1/inventory/status").json()
        static = next(c for c in status["connectors"] if c["name"] == "static")
        assert static["ok"] and static["syncs"] >= 1 and status["counts"]["vm"] == 30 and status["counts"]["project"] == 3
        synced = client.post("/api/v1/inventory/sync", params={"connector": "static"}).json()
        assert synced["results"] == [{"connector": "static", "ok": True, "error": None,
                                      "summary": synced["results"][0]["summary"]}]  # fmt: skip
        assert synced["results"][0]["summary"]["total"] == 0
        assert client.post("/api/v1/inventory/sync", params={"connector": "nope"}).status_code == 404
        assert client.get("/api/v1/inventory/planet").status_code == 404
        assert client.get("/api/v1/inventory/vm", params={"at": "not a time"}).status_code == 400
        ids = ",".join(str(v["id"]) for v in vms["items"])
        names = client.get("/api/v1/inventory/vm/names", params={"ids": ids, "at": scn.start_ns}).json()
        assert sorted(names.values()) == ["db-01", "db-02"]
        payload = encode_batch(imported.key.agent_id, imported.key.seq, imported.tables)
        sent = client.post(
            "/api/v1/ingest", content=payload,
            headers={"X-Cloudtap-Agent": imported.key.agent_id, "X-Cloudtap-Seq": str(imported.key.seq)},
        )  # fmt: skip
        assert sent.status_code < 300, sent.text
    tagged = store.command(f"SELECT countIf(server_vm_id != 0) FROM {store.database}.flow_log")
    assert int(tagged) == result.truth.num_rows

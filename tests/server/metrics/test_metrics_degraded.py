"""/metrics answers when parts of the server are missing or broken: what cannot be read is left out and counted."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from access_helpers import grant
from cloudtap.server.api.app import create_app
from cloudtap.server.metrics import install_metrics
from cloudtap.server.settings import ServerSettings


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}  # fmt: skip


def test_a_failing_collector_costs_its_families_not_the_scrape(tmp_path: Path) -> None:
    settings = ServerSettings.model_validate({
        "inventory": {"enabled": False}, "controller": {"db_path": str(tmp_path / "ctl.sqlite")},
        "auth": {"db_path": str(tmp_path / "access.sqlite"), "audit_log": str(tmp_path / "audit.jsonl")},
    })  # fmt: skip
    app = create_app(settings, None)  # no store, no controller, no inventory: nothing to read, nothing built
    install_metrics(app)
    assert install_metrics(app) is install_metrics(app)  # once
    client = TestClient(app, headers=grant(app, "viewer"))
    first = samples(client.get("/metrics").text)
    assert first[("cloudtap_server_storage_up", frozenset())] == 0
    assert first[("cloudtap_server_controller_agents", frozenset({("state", "capturing")}))] == 0
    assert first[("cloudtap_server_ingest_batches_total", frozenset({("result", "stored")}))] == 0
    assert getattr(app.state, "controller", None) is None  # a scrape never builds the controller

    app.state.ingestor.stats = None  # broken: the ingest families go, the rest stays
    r = client.get("/metrics")
    assert r.status_code == 200
    second = samples(r.text)
    assert not any(name.startswith("cloudtap_server_ingest_") for name, _ in second)
    assert second[("cloudtap_server_metrics_collector_errors_total", frozenset({("collector", "ingest")}))] == 1
    assert second[("cloudtap_server_http_requests_total",
                   frozenset({("method", "GET"), ("route", "/metrics"), ("code", "2xx")}))] == 1  # fmt: skip

"""schemathesis over the whole OpenAPI of the server: no 5xx, answers conform to the documented schema.

The app runs on an embedded chDB store holding the query test dataset (flows and edges in March 2024),
so generated queries hit real rows. Every call carries an admin's API token (``Authorization: Bearer``):
the guards let it through, so the generated input reaches the routes themselves (what callers without
the permission get is tests/server/api/test_route_permissions.py). One test per router family; examples
per operation are limited to keep the run short. The access database, audit log and controller state go
to a temporary directory (never /var/lib).
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "query"))
from querydata import make_dataset, open_test_store  # noqa: E402

from access_helpers import grant  # noqa: E402
from cloudtap.server.api.app import create_app  # noqa: E402
from cloudtap.server.settings import ServerSettings  # noqa: E402

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
#: Examples per operation: a few times more with CLOUDTAP_FUZZ_SCALE=4 (a longer, deeper run).
SCALE = max(1, int(os.environ.get("CLOUDTAP_FUZZ_SCALE", "1")))
_TMP = Path(tempfile.mkdtemp(prefix="cloudtap-fuzz-"))


class _StoreProxy:
    """Stands in for the store while the module is imported (the schema is built then); a fixture fills it."""

    target: Any = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.target, name)


def _settings() -> ServerSettings:
    return ServerSettings.model_validate(
        {"pcap": {"spool_directory": str(_TMP / "spool"), "agent_timeout_s": 2.0},
         "controller": {"db_path": str(_TMP / "controller.sqlite")},
         "auth": {"db_path": str(_TMP / "access.sqlite"), "audit_log": str(_TMP / "audit.jsonl")}}
    )  # fmt: skip


# agents POST Arrow batches: random bytes exercise the "malformed batch -> 400" path
schemathesis.serializer.alias("application/vnd.cloudtap.batch", "application/octet-stream")
_STORE = _StoreProxy()
APP = create_app(_settings(), _STORE)  # type: ignore[arg-type]
#: Every generated call is an admin's.
ADMIN = grant(APP, "admin", name="fuzz-admin")
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.fixture(scope="module")
def app_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    store = open_test_store(str(tmp_path_factory.getbasetemp() / "chdb"), make_dataset(flows=500, deltas=3000),
                            "api_fuzz")  # fmt: skip
    _STORE.target = store
    try:
        yield store
    finally:
        _STORE.target = None
        store.close()


@schema.include(path_regex=r"^/api/v1/(query|ingest|health)").parametrize()
@settings(max_examples=25 * SCALE, deadline=None, suppress_health_check=list(HealthCheck))
def test_query_ingest_health_routes(case: Any, app_store: Any) -> None:
    response = case.call(headers=ADMIN)
    case.validate_response(response, checks=CHECKS)
    assert response.status_code < 500


@schema.include(path_regex=r"^/api/v1/inventory").parametrize()
@settings(max_examples=12 * SCALE, deadline=None, suppress_health_check=list(HealthCheck))
def test_inventory_routes(case: Any, app_store: Any) -> None:
    response = case.call(headers=ADMIN)
    case.validate_response(response, checks=CHECKS)
    assert response.status_code < 500


@schema.include(path_regex=r"^/api/v1/analysis").parametrize()
@settings(max_examples=12 * SCALE, deadline=None, suppress_health_check=list(HealthCheck))
def test_analysis_routes(case: Any, app_store: Any) -> None:
    response = case.call(headers=ADMIN)
    case.validate_response(response, checks=CHECKS)
    assert response.status_code < 500


@schema.include(path_regex=r"^/api/v1/pcap").parametrize()
@settings(max_examples=25 * SCALE, deadline=None, suppress_health_check=list(HealthCheck))
def test_pcap_route(case: Any, app_store: Any) -> None:
    response = case.call(headers=ADMIN)
    # 502 (an agent could not be reached) is documented and legitimate: generated URLs point nowhere
    case.validate_response(response, checks=[c for c in CHECKS if c is not not_a_server_error])
    assert response.status_code < 500 or response.status_code == 502, response.text


# Controller and fleet routes: agents, groups, commands, policies, controller, fleet, diagnose.
@schema.include(
    path_regex=r"^/api/v1/(agents|groups|commands|policies|controller|fleet|diagnose|destinations|distribution)"
).parametrize()
@settings(max_examples=8 * SCALE, deadline=None, suppress_health_check=list(HealthCheck))
def test_controller_and_fleet_routes(case: Any, app_store: Any) -> None:
    response = case.call(headers=ADMIN)
    case.validate_response(response, checks=CHECKS)
    assert response.status_code < 500


# Access control: log in/out, tokens, users and their bindings, the audit log.
@schema.include(path_regex=r"^/api/v1/(auth|users|audit)").parametrize()
@settings(max_examples=10 * SCALE, deadline=None, suppress_health_check=list(HealthCheck))
def test_auth_user_and_audit_routes(case: Any, app_store: Any) -> None:
    response = case.call(headers=ADMIN)
    case.validate_response(response, checks=CHECKS)
    assert response.status_code < 500


def test_the_fuzzing_admin_is_authenticated() -> None:
    """The generated calls reach the routes: the token is an admin's (and stays valid after the fuzzing)."""
    from fastapi.testclient import TestClient

    me = TestClient(APP).get("/api/v1/auth/me", headers=ADMIN)
    assert me.status_code == 200 and me.json()["name"] == "fuzz-admin" and me.json()["roles"] == ["admin"]


def test_every_route_is_in_one_family() -> None:
    families = (
        r"^/api/v1/(query|ingest|health|inventory|analysis|pcap|agents|groups|commands|policies|controller|fleet"
        r"|diagnose|auth|users|audit|destinations|distribution|findings)"
    )
    import re

    paths = {op.ok().path for op in schema.get_all_operations()}
    assert paths and all(re.match(families, p) for p in paths), sorted(p for p in paths if not re.match(families, p))


def test_the_schema_covers_the_query_ingest_and_health_routes() -> None:
    labels = {op.ok().label for op in schema.get_all_operations()}
    assert {"POST /api/v1/query", "GET /api/v1/query/top", "GET /api/v1/query/series", "GET /api/v1/query/flows",
            "GET /api/v1/query/catalog", "POST /api/v1/ingest", "GET /api/v1/health"} <= labels  # fmt: skip


def test_controller_refuses_bodies_it_could_not_answer_back() -> None:
    """NaN/Infinity and lone surrogates are 422s in FastAPI's shape, and never reach the stored state."""
    from fastapi.testclient import TestClient

    client = TestClient(APP)
    agent = client.post("/api/v1/agents/register", json={"hostname": "fuzz-hv", "machine_id": "m-1"})
    assert agent.status_code == 200, agent.text
    heartbeat = f"/api/v1/agents/{agent.json()['agent_id']}/heartbeat"
    json_type = {"content-type": "application/json"}
    as_agent = {**json_type, "Authorization": f"Bearer {agent.json()['credential']}"}
    for path, body, loc in [
        ("/api/v1/agents/register", '{"hostname": "h", "machine_id": "m", "heartbeat_s": Infinity}', ["body", "heartbeat_s"]),
        ("/api/v1/agents/register", '{"hostname": "\\ud800", "machine_id": "m"}', ["body", "hostname"]),
        (heartbeat, '{"cpu_percent": NaN}', ["body", "cpu_percent"]),
        (heartbeat, '{"interfaces": [{"name": "\\udfff"}]}', ["body", "interfaces", 0, "name"]),
        (heartbeat, '{"cpu_percent": 1e308}', ["body", "cpu_percent"]),
        (heartbeat, '{"rss_bytes": 1' + "0" * 30 + "}", ["body", "rss_bytes"]),
    ]:  # fmt: skip
        answer = client.post(path, content=body, headers=as_agent if path == heartbeat else json_type)
        assert answer.status_code == 422, (body, answer.text)
        assert answer.json()["detail"][0]["loc"] == loc
    assert client.post(heartbeat, json={"cpu_percent": 12.5, "rss_bytes": 2**40}, headers=as_agent).status_code == 200
    top = client.get("/api/v1/fleet/top", params={"by": "memory", "window": "90s"}, headers=ADMIN)
    assert top.status_code == 200 and top.json()[0]["memory"] == 2**40
    bad_window = client.get("/api/v1/fleet/hosts", params={"window": "1e999"}, headers=ADMIN)
    assert bad_window.status_code == 422 and bad_window.json()["detail"][0]["loc"] == ["query", "window"]
    missing = client.delete("/api/v1/policies/never-defined", headers=ADMIN)
    assert missing.status_code == 404 and "never-defined" in missing.json()["detail"]
    overlay = client.put("/api/v1/groups/default/config", json={"overlay": {"limits": {"max_pps": -1}}}, headers=ADMIN)
    assert overlay.status_code == 422 and "limits.max_pps" in overlay.json()["detail"][0]["msg"]
    assert client.delete(f"/api/v1/agents/{agent.json()['agent_id']}", headers=ADMIN).status_code == 200

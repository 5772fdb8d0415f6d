"""schemathesis over the /api/v1/findings routes: no 5xx, answers conform to the documented schema.

The app runs on a store holding the planted cloud with an admin's token (what callers without the permission get
is ``test_findings_api.py``). Examples per operation are limited to keep the run short.
"""

from __future__ import annotations

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

from access_helpers import grant
from cloudtap.server.api.app import create_app
from cloudtap.server.settings import ServerSettings

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
_TMP = Path(tempfile.mkdtemp(prefix="cloudtap-findings-fuzz-"))
APP = create_app(
    ServerSettings.model_validate(
        {
            "inventory": {"enabled": False},
            "controller": {"db_path": str(_TMP / "ctl.sqlite")},
            "auth": {"db_path": str(_TMP / "access.sqlite"), "audit_log": str(_TMP / "audit.jsonl")},
            "findings": {"enabled": False},
        }
    ),  # fmt: skip
    None,
)
ADMIN = grant(APP, "admin", name="findings-fuzz-admin")
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.fixture(scope="module")
def app_store(chdb_dsn: str, planted_data: Any) -> Iterator[Any]:
    """The planted cloud in a database of its own (fuzzed rules and runs change nothing elsewhere)."""
    from cloudtap.server.store.clickhouse import ClickHouseStore

    store = ClickHouseStore(chdb_dsn, database="findings_fuzz")
    store.migrate()
    store.insert(planted_data.tables, planted_data.key)
    APP.state.store = store
    APP.state.findings_engine = None
    try:
        yield store
    finally:
        store.close()


@schema.include(path_regex=r"^/api/v1/findings").parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_findings_routes(case: Any, app_store: Any) -> None:
    response = case.call(headers=ADMIN)
    case.validate_response(response, checks=CHECKS)
    assert response.status_code < 500

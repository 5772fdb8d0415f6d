"""schemathesis over the whole OpenAPI of the server: no 5xx, answers conform to the documented schema.

The app runs on an embedded chDB store holding the query test dataset (flows and edges in March 2024),
so generated queries hit real rows. Examples per operation are limited to keep the run short.
"""

from __future__ import annotations

import sys
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

from cloudtap.server.api.app import create_app  # noqa: E402
from cloudtap.server.settings import ServerSettings  # noqa: E402

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


class _StoreProxy:
    """Stands in for the store while the module is imported (the schema is built then); a fixture fills it."""

    target: Any = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.target, name)


# agents POST Arrow batches: random bytes exercise the "malformed batch -> 400" path
schemathesis.serializer.alias("application/vnd.cloudtap.batch", "application/octet-stream")
_STORE = _StoreProxy()
APP = create_app(ServerSettings(), _STORE)  # type: ignore[arg-type]
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


#: Routes of this module's owners (query, ingest, health): every check must pass.
OWN = r"^/api/v1/(query|ingest|health)"


@schema.include(path_regex=OWN).parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_never_fails_and_matches_its_schema(case: Any, app_store: Any) -> None:
    response = case.call()
    case.validate_response(response, checks=CHECKS)
    assert response.status_code < 500


# Routes owned elsewhere (fleet, agents, inventory, analysis, pcap, policies...), found on 2026-11-26:
# undocumented 400/404 answers, 422 bodies that are not the HTTPValidationError shape, and
# POST /api/v1/pcap answering 502 for an empty target URL. Reported; xfail until their owners fix them.
@pytest.mark.xfail(reason="known schema findings in routes owned elsewhere", strict=False)
@schema.exclude(path_regex=OWN).parametrize()
@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
def test_other_routes_never_fail_and_match_their_schema(case: Any, app_store: Any) -> None:
    response = case.call()
    case.validate_response(response, checks=CHECKS)
    assert response.status_code < 500


def test_the_schema_covers_the_query_ingest_and_health_routes() -> None:
    labels = {op.ok().label for op in schema.get_all_operations()}
    assert {"POST /api/v1/query", "GET /api/v1/query/top", "GET /api/v1/query/series", "GET /api/v1/query/flows",
            "GET /api/v1/query/catalog", "POST /api/v1/ingest", "GET /api/v1/health"} <= labels  # fmt: skip

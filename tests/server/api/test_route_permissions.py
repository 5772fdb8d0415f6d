"""Every API route declares exactly one permission, and its guard answers first.

1. Each route of the app has one ``Requirement`` (``require(...)``) among its own dependencies.
2. Without credentials every route that is not public answers 401, before its parameters and body are
   validated (FastAPI solves dependencies before it validates the request; only a body that is not JSON
   at all is refused, 422, before them). The public routes are a short, named list.
3. A viewer's token changes nothing: every POST/PUT/DELETE answers 403, except the self-service routes
   (log in/out, own tokens, own password), the public ones, and the POSTs that only read (queries and
   analyses: ``flows:read``, which viewers hold by design).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.convertors import FloatConvertor, IntegerConvertor

from access_helpers import grant
from cloudtap.server.access.permissions import AGENT, PUBLIC, ROLES, Permission
from cloudtap.server.api.app import create_app
from cloudtap.server.api.guard import Requirement
from cloudtap.server.settings import ServerSettings

UNSAFE = {"POST", "PUT", "DELETE", "PATCH"}
#: Routes anyone may call: health, logging in and out (also single sign-on), agent registration (the
#: controller checks its bootstrap token itself).
#: The console's files and the API docs page are public too: they hold no data.
PUBLIC_ROUTES = re.compile(
    r"^(GET /api/v1/health|POST /api/v1/agents/register|(GET|POST) /api/v1/auth/.*"
    r"|GET /|GET /assets/\{name:path\}|GET /docs|GET /swagger/\{name\})$"
)
#: A user's own session, tokens and password: any logged-in user, viewers included.
SELF_SERVICE = re.compile(
    r"^(POST|DELETE|PUT) /api/v1/(auth/(login|logout|token|tokens(/\{token_id\})?)|users/\{name\}/password)$"
)
#: POSTs that only read (a query or analysis in a body): viewers may call them.
READ_ONLY_POSTS = {
    "POST /api/v1/query",
    "POST /api/v1/analysis/topology",
    "POST /api/v1/analysis/compare",
    "POST /api/v1/analysis/bursts",
    "POST /api/v1/analysis/drill",
    "POST /api/v1/analysis/backtest",
    "POST /api/v1/analysis/signatures/{name}/run",
}


def _contexts(app: FastAPI) -> Iterator[Any]:
    """Every route as the app serves it (path with the include prefix, effective dependencies)."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # FastAPI before included-router contexts: the app's routes are flat
        yield from app.routes
        return
    yield from iter_route_contexts(app.routes)


def api_routes(app: FastAPI) -> list[tuple[str, str, Any]]:
    """``(method, path, route)`` of every API route (every method of each)."""
    out = []
    for ctx in _contexts(app):
        if isinstance(getattr(ctx, "original_route", ctx), APIRoute):
            out += [(method, ctx.path, ctx) for method in sorted(ctx.methods - {"HEAD", "OPTIONS"})]
    return out


def requirements(route: Any) -> list[Requirement]:
    """The route's own guards (route-level dependencies)."""
    return [d.call for d in route.dependant.dependencies if isinstance(d.call, Requirement)]


def permission_of(route: Any) -> Any:
    """The route's permission; None unless it declares exactly one (the first test names those routes)."""
    found = requirements(route)
    return found[0].permission if len(found) == 1 else None


def dummy_path(route: Any) -> str:
    """The route's path with its parameters filled in (values no route gives a meaning to)."""
    path: str = route.path
    for name, convertor in route.param_convertors.items():
        value = "7" if isinstance(convertor, IntegerConvertor | FloatConvertor) else f"dummy-{name}"
        path = re.sub(r"\{" + name + r"(:[^}]*)?\}", value, path)
    return path


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    tmp: Path = tmp_path_factory.mktemp("route-permissions")
    settings = ServerSettings.model_validate(
        {"inventory": {"enabled": False}, "controller": {"db_path": str(tmp / "ctl.sqlite")},
         "auth": {"db_path": str(tmp / "access.sqlite"), "audit_log": str(tmp / "audit.jsonl")}}
    )  # fmt: skip
    application: FastAPI = create_app(settings, None)
    return application


@pytest.fixture(scope="module")
def routes(app: FastAPI) -> list[tuple[str, str, Any]]:
    found = api_routes(app)
    assert len(found) > 40  # the enumeration sees the included routers' routes
    return found


def test_every_route_declares_exactly_one_permission(routes: list[tuple[str, str, Any]]) -> None:
    wrong = {f"{m} {p}: {[r.permission for r in requirements(route)]}" for m, p, route in routes
             if len(requirements(route)) != 1}  # fmt: skip
    assert not wrong, "routes without exactly one require(...):\n" + "\n".join(sorted(wrong))
    known = {*Permission, PUBLIC, AGENT, "authenticated"}
    assert {permission_of(route) for _, _, route in routes} <= known


def test_the_enumeration_covers_the_openapi_document(
    app: FastAPI, routes: list[tuple[str, str, Any]]
) -> None:
    listed = {(m, p) for m, p, _ in routes}
    documented = {(m.upper(), p) for p, ops in app.openapi()["paths"].items() for m in ops}
    assert documented <= listed, sorted(documented - listed)
    assert ("GET", "/metrics") in listed - documented  # served, not documented: enumerated all the same


def test_public_routes_are_the_named_few(routes: list[tuple[str, str, Any]]) -> None:
    public = {f"{m} {p}" for m, p, route in routes if permission_of(route) == PUBLIC}
    assert public and all(PUBLIC_ROUTES.match(r) for r in public), sorted(
        r for r in public if not PUBLIC_ROUTES.match(r)
    )
    assert "GET /api/v1/health" in public


def test_without_credentials_every_non_public_route_is_401(
    app: FastAPI, routes: list[tuple[str, str, Any]]
) -> None:
    client = TestClient(app, raise_server_exceptions=False)
    wrong = []
    checked = 0
    for method, path, route in routes:
        if permission_of(route) == PUBLIC:
            continue
        # an empty JSON object: every route with a body finds it invalid, so a 401 shows the guard came first
        r = client.request(method, dummy_path(route), json={} if method in UNSAFE else None)
        checked += 1
        if r.status_code != 401:
            wrong.append(f"{method} {path}: {r.status_code} {r.text[:120]}")
        elif "authorization" not in r.text.lower() and "credential" not in r.text.lower():
            wrong.append(f"{method} {path}: 401 without saying what to send: {r.text[:120]}")
    assert checked > 40
    assert not wrong, "answered without credentials:\n" + "\n".join(wrong)


def test_guards_run_before_body_validation(app: FastAPI) -> None:
    client = TestClient(app)
    assert client.post("/api/v1/users", json={"not": "a user"}).status_code == 401
    assert client.post("/api/v1/query", json={"time_from": "yesterday-ish", "limit": -1}).status_code == 401
    assert client.get("/api/v1/query/top", params={"limit": 0, "group": "nope"}).status_code == 401
    # a body that is not JSON at all is refused while it is read, before any dependency runs
    bad = client.post("/api/v1/users", content=b"{not json", headers={"content-type": "application/json"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["type"] == "json_invalid"


def test_metrics_and_public_routes(app: FastAPI) -> None:
    client = TestClient(app)
    assert client.get("/metrics").status_code == 401
    assert client.get("/api/v1/ingest/stats").status_code == 401
    health = client.get("/api/v1/health")
    assert health.status_code == 200 and set(health.json()) <= {"status", "version", "storage"}
    assert client.get("/openapi.json").status_code == 200


def test_a_viewer_changes_nothing(app: FastAPI, routes: list[tuple[str, str, Any]]) -> None:
    client = TestClient(app, raise_server_exceptions=False)
    viewer = grant(app, "viewer")
    wrong = []
    checked = 0
    for method, path, route in routes:
        label = f"{method} {path}"
        if method not in UNSAFE or SELF_SERVICE.match(label) or permission_of(route) == PUBLIC:
            continue
        if label in READ_ONLY_POSTS:
            if permission_of(route) != Permission.FLOWS_READ:
                wrong.append(f"{label}: listed as read-only but needs {permission_of(route)}")
            continue
        checked += 1
        r = client.request(method, dummy_path(route), json={}, headers=viewer)
        if r.status_code != 403:
            wrong.append(f"{label}: {r.status_code} {r.text[:120]}")
        elif permission_of(route) in ROLES["viewer"]:
            wrong.append(
                f"{label}: a write route guarded by a permission viewers hold ({permission_of(route)})"
            )
    assert checked > 15
    assert not wrong, "a viewer's token was not refused (403):\n" + "\n".join(wrong)


def test_a_viewer_may_use_the_self_service_routes(app: FastAPI) -> None:
    client = TestClient(app)
    viewer = grant(app, "viewer", name="route-perm-viewer")
    made = client.post("/api/v1/auth/tokens", json={"name": "second"}, headers=viewer)
    assert made.status_code == 200, made.text
    assert client.delete(f"/api/v1/auth/tokens/{made.json()['id']}", headers=viewer).status_code == 200
    changed = client.put("/api/v1/users/route-perm-viewer/password", json={"password": "another long passphrase 42"},
                         headers=viewer)  # fmt: skip
    assert changed.status_code == 200, changed.text
    other = client.put("/api/v1/users/someone-else/password", json={"password": "another long passphrase 42"},
                       headers=viewer)  # fmt: skip
    assert other.status_code == 403

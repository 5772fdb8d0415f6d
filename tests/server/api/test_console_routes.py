"""The console's files and the API docs page: public, local (no CDN), cached right, nothing outside dist."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cloudtap.server.api.app import create_app
from cloudtap.server.settings import ServerSettings


@pytest.fixture
def app(tmp_path: Path) -> Any:
    settings = ServerSettings.model_validate(
        {"inventory": {"enabled": False}, "controller": {"db_path": str(tmp_path / "ctl.sqlite")},
         "auth": {"db_path": str(tmp_path / "access.sqlite"), "audit_log": str(tmp_path / "audit.jsonl")}}
    )  # fmt: skip
    return create_app(settings, None)


@pytest.fixture
def dist(app: Any, tmp_path: Path) -> Path:
    """A built console: index, one hashed asset, Swagger UI's files; and a secret beside it."""
    root = tmp_path / "dist"
    (root / "assets").mkdir(parents=True)
    (root / "swagger").mkdir()
    (root / "index.html").write_text('<!doctype html><script type="module" src="/assets/index-abc.js"></script>')
    (root / "assets" / "index-abc.js").write_text("console.log('console')")
    (root / "swagger" / "swagger-ui-bundle.js").write_text("window.SwaggerUIBundle = () => ({})")
    (root / "swagger" / "swagger-ui.css").write_text("body {}")
    (root / "swagger" / "favicon-32x32.png").write_bytes(b"\x89PNG")
    (tmp_path / "secret.txt").write_text("not for the web")
    (root / "assets" / "link.js").symlink_to(tmp_path / "secret.txt")
    app.state.console_dist = root
    return root


def test_the_console_is_served_at_the_root_without_credentials(app: Any, dist: Path) -> None:
    client = TestClient(app)
    page = client.get("/")
    assert page.status_code == 200 and "/assets/index-abc.js" in page.text
    assert page.headers["cache-control"] == "no-cache"  # a new release shows on reload
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    asset = client.get("/assets/index-abc.js")
    assert asset.status_code == 200 and "immutable" in asset.headers["cache-control"]
    assert asset.headers["content-type"].startswith("text/javascript")


@pytest.mark.parametrize("path", ["/assets/../index.html", "/assets/..%2F..%2Fsecret.txt", "/assets/%2e%2e/%2e%2e/secret.txt",
                                  "/assets/link.js", "/assets/missing.js", "/swagger/..%2Fsecret.txt"])  # fmt: skip
def test_nothing_outside_the_built_files_is_served(app: Any, dist: Path, path: str) -> None:
    answer = TestClient(app).get(path)
    assert answer.status_code == 404 or "not for the web" not in answer.text
    assert "not for the web" not in answer.text


def test_an_unbuilt_console_says_how_to_build_it(app: Any, tmp_path: Path) -> None:
    app.state.console_dist = tmp_path / "nothing"
    client = TestClient(app)
    for path in ("/", "/docs"):
        page = client.get(path)
        assert page.status_code == 200 and "make console" in page.text


def test_api_docs_load_from_this_server_only(app: Any, dist: Path) -> None:
    client = TestClient(app)
    page = client.get("/docs")
    assert page.status_code == 200
    assert not re.search(r"(src|href)=\"(https?:)?//", page.text), "the docs page loads something from elsewhere"
    for src in re.findall(r"(?:src|href)=\"([^\"]+)\"", page.text):
        assert client.get(src).status_code == 200, src
    init = client.get("/swagger/init.js").text
    assert "/openapi.json" in init and "X-CSRF-Token" in init
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/redoc").status_code == 404  # no second, CDN-loading docs page


def test_console_routes_stay_out_of_the_api_document(app: Any) -> None:
    paths = set(app.openapi()["paths"])
    assert not {"/", "/docs", "/assets/{name}", "/swagger/{name}"} & paths
    assert "/api/v1/query/extent" in paths


def test_precompressed_assets_go_to_browsers_that_accept_gzip(app: Any, dist: Path) -> None:
    import gzip

    source = dist / "assets" / "index-abc.js"
    (dist / "assets" / "index-abc.js.gz").write_bytes(gzip.compress(source.read_bytes()))
    client = TestClient(app)
    packed = client.get("/assets/index-abc.js", headers={"Accept-Encoding": "gzip"})
    assert packed.headers["content-encoding"] == "gzip" and packed.headers["vary"] == "Accept-Encoding"
    assert packed.headers["content-type"].startswith("text/javascript")
    assert packed.text == source.read_text()  # the client inflated it
    plain = client.get("/assets/index-abc.js", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.text == source.read_text()

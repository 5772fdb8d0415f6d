"""The web console at ``/`` and the API docs at ``/docs``, both from files in the package (no CDN).

Every file here is public: the console's code holds no data, and every call it makes goes through the
API with the user's session. Hashed assets are cached for a year; ``index.html`` never (so a new
release is picked up on reload). Responses carry a Content-Security-Policy that allows only this
server's own scripts.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, Response

from cloudtap.server.access.permissions import PUBLIC
from cloudtap.server.api.guard import require
from cloudtap.server.console import DIST, built

router = APIRouter(include_in_schema=False)
_PUBLIC = [Depends(require(PUBLIC))]

#: Scripts and styles only from this server; ECharts and Vue set inline ``style`` attributes.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}

_NOT_BUILT = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>cloudtap</title></head>
<body style="font-family: sans-serif; max-width: 40rem; margin: 4rem auto">
<h1>cloudtap</h1><p>The web console is not built in this installation. Build it with <code>make console</code>
(Node.js 18 or newer), or use the CLI and the API (<a href="/docs">API docs</a>).</p></body></html>"""

_DOCS = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>cloudtap API</title>
<link rel="stylesheet" href="/swagger/swagger-ui.css"><link rel="icon" href="/swagger/favicon-32x32.png"></head>
<body><div id="swagger-ui"></div><script src="/swagger/swagger-ui-bundle.js"></script>
<script src="/swagger/init.js"></script></body></html>"""

_INIT = """window.ui = SwaggerUIBundle({url: '/openapi.json', dom_id: '#swagger-ui', deepLinking: true,
  withCredentials: true, requestInterceptor: (req) => {
    const csrf = document.cookie.split('; ').find((c) => c.startsWith('cloudtap_csrf='));
    if (csrf && req.method !== 'GET') req.headers['X-CSRF-Token'] = decodeURIComponent(csrf.slice(14));
    return req;
  }});
"""


def dist_of(request: Request) -> Path:
    """Where this app's console files are (``app.state.console_dist``, tests set it; else the package's)."""
    return getattr(request.app.state, "console_dist", None) or DIST


def _file(root: Path, name: str) -> Path:
    """``root/name`` if it is a file inside ``root`` (no ``..``, no symlink out), else 404."""
    path = (root / name).resolve()
    if not path.is_relative_to(root.resolve()) or not path.is_file():
        raise HTTPException(404, "no such file")
    return path


def _send(path: Path, request: Request, cache: str) -> Response:
    """``path``, or its precompressed ``path.gz`` (made at build time) when the browser accepts gzip."""
    headers = {**_HEADERS, "Cache-Control": cache, "Vary": "Accept-Encoding"}
    packed = path.with_name(path.name + ".gz")
    if "gzip" in request.headers.get("accept-encoding", "") and packed.is_file():
        media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return FileResponse(packed, media_type=media, headers={**headers, "Content-Encoding": "gzip"})
    return FileResponse(path, headers=headers)


@router.get("/", dependencies=_PUBLIC)
def index(request: Request) -> Response:
    """The console's single page (or how to build it)."""
    dist = dist_of(request)
    if not built(dist):
        return HTMLResponse(_NOT_BUILT, headers=_HEADERS)
    return _send(dist / "index.html", request, "no-cache")


@router.get("/assets/{name:path}", dependencies=_PUBLIC)
def asset(name: str, request: Request) -> Response:
    """A built, content-hashed asset of the console."""
    return _send(_file(dist_of(request) / "assets", name), request, "public, max-age=31536000, immutable")


@router.get("/docs", dependencies=_PUBLIC)
def docs(request: Request) -> Response:
    """Swagger UI for ``/openapi.json``, from local files; calls made from it use the browser's session."""
    if not (dist_of(request) / "swagger" / "swagger-ui-bundle.js").is_file():
        return HTMLResponse(_NOT_BUILT, headers=_HEADERS)
    return HTMLResponse(_DOCS, headers={**_HEADERS, "Cache-Control": "no-cache"})


@router.get("/swagger/{name}", dependencies=_PUBLIC)
def swagger_asset(name: str, request: Request) -> Response:
    """Swagger UI's script, stylesheet and icon (copied from the npm package at build time)."""
    if name == "init.js":
        return Response(_INIT, media_type="text/javascript", headers=_HEADERS)
    return _send(_file(dist_of(request) / "swagger", name), request, "public, max-age=86400")

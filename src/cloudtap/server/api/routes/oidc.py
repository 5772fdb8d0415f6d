"""/api/v1/auth/oidc: single sign-on with an OpenID Connect provider (docs/security.md).

``GET /login?next=/path`` sends the browser to the provider (with a short-lived HttpOnly cookie binding
the login to this browser); the provider sends it back to ``GET /callback?code&state``, which checks
everything (:mod:`cloudtap.server.access.oidc`), creates or updates the user (``source: oidc``) with the
bindings their groups map to, starts a session with the same cookies as a password login, and returns to
``next`` (a local path only). ``GET /api/v1/auth/oidc`` tells the console whether to show the SSO button.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from cloudtap.errors import CloudtapError
from cloudtap.server.access.oidc import RelyingParty, relying_party_of
from cloudtap.server.access.permissions import PUBLIC
from cloudtap.server.access.service import AuthError
from cloudtap.server.api.guard import require
from cloudtap.server.api.routes._errors import ErrorText
from cloudtap.server.api.routes.auth import _secure, access_of, start_session
from cloudtap.server.audit import audit_of

PREFIX = "/api/v1/auth/oidc"
router = APIRouter(prefix=PREFIX, tags=["auth"])
#: The cookie binding a pending login to the browser that started it (SameSite=Lax: it must come back
#: on the provider's top-level redirect to the callback).
BINDING_COOKIE = "cloudtap_oidc"
_404: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorText, "description": "single sign-on is not configured"}
}


def local_path(value: str | None) -> str:
    """``value`` if it is a path on this server (``/...``), else ``/``: never a redirect elsewhere."""
    if not value or len(value) > 2048 or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in value):
        return "/"
    parts = urlsplit(value)
    return value if not parts.scheme and not parts.netloc else "/"


def _rp(request: Request) -> RelyingParty:
    try:
        rp = relying_party_of(request.app)
    except CloudtapError as exc:
        raise HTTPException(503, f"single sign-on is misconfigured: {exc}") from exc
    if rp is None:
        raise HTTPException(404, "single sign-on is not configured")
    return rp


def _drop_bindings(request: Request, name: str) -> None:
    """An SSO user the provider no longer puts in a mapped group loses their roles (and so their tokens' power)."""
    access = access_of(request)
    try:
        user = access.user(name)
    except AuthError:
        return
    if user["source"] == "oidc" and user["bindings"]:
        access.set_bindings(name, [])


def _client(request: Request) -> str | None:
    return request.client.host if request.client else None


@router.get("", dependencies=[Depends(require(PUBLIC))])
def oidc_config(request: Request) -> dict[str, Any]:
    """Whether single sign-on is on (the console shows its button then), the issuer and where to start."""
    section = request.app.state.settings.auth.oidc
    if section is None:
        return {"enabled": False, "issuer": None, "login_url": None, "label": None}
    return {"enabled": True, "issuer": section.issuer, "login_url": f"{PREFIX}/login", "label": section.label}


@router.get("/login", status_code=302, dependencies=[Depends(require(PUBLIC))],
            responses={**_404, 502: {"model": ErrorText, "description": "the provider is unreachable"}})  # fmt: skip
def oidc_login(request: Request, next_path: str = Query("/", alias="next", max_length=2048)) -> Response:
    """Send the browser to the identity provider; it comes back to ``/callback``, then to ``next`` (a local path)."""
    rp = _rp(request)
    redirect_uri = rp.section.redirect_url or str(request.url_for("oidc_callback"))
    try:
        url, pending = rp.begin(redirect_uri, local_path(next_path))
    except AuthError as exc:
        raise HTTPException(exc.status, exc.reason) from exc
    response = RedirectResponse(url, status_code=302)
    response.set_cookie(BINDING_COOKIE, pending.binding, max_age=int(rp.pending.ttl_s), httponly=True,
                        secure=_secure(request), samesite="lax", path=PREFIX)  # fmt: skip
    return response


@router.get("/callback", name="oidc_callback", status_code=302, dependencies=[Depends(require(PUBLIC))],
            responses={**_404, 400: {"model": ErrorText}, 401: {"model": ErrorText}, 403: {"model": ErrorText}})  # fmt: skip
def oidc_callback(request: Request, code: str | None = Query(None, max_length=4096),
                  state: str | None = Query(None, max_length=512), error: str | None = Query(None, max_length=256),
                  error_description: str | None = Query(None, max_length=1024)) -> Response:  # fmt: skip
    """Finish a login: check the provider's answer, map the groups, start a session, return to ``next``."""
    rp = _rp(request)
    user: str | None = None
    try:
        pending = rp.take(state or "", request.cookies.get(BINDING_COOKIE))
        if error:
            why = f"{error}: {error_description}" if error_description else error
            raise AuthError(401, f"the identity provider did not log you in ({why[:300]})")
        if not code:
            raise AuthError(400, "the callback carries no authorization code")
        identity = rp.finish(pending, code)
        user = identity.name
        if not identity.bindings:
            _drop_bindings(request, identity.name)
            raise AuthError(403, f"{identity.name} is in no group that auth.oidc.group_roles maps to a role "
                                 "(ask an admin to map one of your groups)")  # fmt: skip
        principal = access_of(request).upsert_external_user(identity.name, "oidc", list(identity.bindings))
    except (AuthError, ValueError) as exc:
        status, reason = (
            (exc.status, exc.reason) if isinstance(exc, AuthError) else (403, f"user name refused: {exc}")
        )
        audit_of(request.app).record("auth.login", None, "refused", user=user, client=_client(request), via="oidc",
                                     reason=reason)  # fmt: skip
        refused = JSONResponse({"detail": reason}, status_code=status)
        refused.delete_cookie(BINDING_COOKIE, path=PREFIX)
        return refused
    response = RedirectResponse(pending.next, status_code=302)
    start_session(request, response, principal)
    response.delete_cookie(BINDING_COOKIE, path=PREFIX)
    audit_of(request.app).record("auth.login", principal.name, client=_client(request), via="oidc",
                                 groups=list(identity.groups), bindings=[b.to_doc() for b in identity.bindings])  # fmt: skip
    return response

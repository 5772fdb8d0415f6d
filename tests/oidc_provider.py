"""A small OpenID Connect provider for tests (never for production), served by uvicorn on 127.0.0.1:0.

It serves discovery, a JWKS (an RSA key made at start), ``/authorize`` (logs in ``login_hint`` or the
preset :attr:`TestProvider.user` without asking, and redirects back with ``code`` and ``state``) and
``/token`` (checks the client's credentials, the redirect URI and PKCE S256, returns an RS256 ID token).
:attr:`TestProvider.tamper` makes it misbehave: ``forged`` (signed with another key under the same kid),
``expired``, ``audience``, ``nonce``, ``issuer``, ``unsigned`` (``alg: none``), ``hs256`` (HMAC with the
client secret), ``at_hash``.

Usage: ``with serve_provider() as provider: ... provider.url ...``; ``serve(app)`` serves any ASGI app.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote

from authlib.common.urls import add_params_to_uri
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from joserfc import jwt
from joserfc.jwk import KeySet, OctKey, RSAKey

from uvicorn_thread import serve_in_thread

CLIENT_ID = "cloudtap-test"
CLIENT_SECRET = "test-client-secret-not-a-real-one"


@dataclass
class TestUser:
    """Who the provider logs in."""

    __test__ = False  # not a test class

    name: str
    groups: list[str] = field(default_factory=list)
    sub: str = field(default_factory=lambda: secrets.token_hex(8))


@dataclass
class TestProvider:
    """The provider's state: registered client, users, issued codes, what it saw."""

    __test__ = False  # not a test class

    client_id: str = CLIENT_ID
    client_secret: str = CLIENT_SECRET
    url: str = ""
    user: TestUser | None = None
    users: dict[str, TestUser] = field(default_factory=dict)
    redirect_uris: set[str] = field(default_factory=set)
    tamper: str | None = None
    key: RSAKey = field(
        default_factory=lambda: RSAKey.generate_key(2048, parameters={"kid": "k1", "use": "sig"})
    )
    codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    authorize_requests: list[dict[str, str]] = field(default_factory=list)
    token_requests: list[dict[str, Any]] = field(default_factory=list)

    def reset(self) -> None:
        """Forget users, codes, tampering and what was seen (between tests)."""
        self.user, self.tamper = None, None
        self.users.clear()
        self.codes.clear()
        self.authorize_requests.clear()
        self.token_requests.clear()

    def id_token(self, grant: dict[str, Any], access_token: str) -> str:
        """The ID token for a redeemed code (tampered as :attr:`tamper` says)."""
        now = int(time.time())
        user: TestUser = grant["user"]
        digest = hashlib.sha256(access_token.encode()).digest()
        claims: dict[str, Any] = {
            "iss": self.url, "aud": self.client_id, "azp": self.client_id, "sub": user.sub, "iat": now,
            "exp": now + 300, "nonce": grant["nonce"], "preferred_username": user.name, "groups": user.groups,
            "at_hash": base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode(),
        }  # fmt: skip
        key: Any = self.key
        header = {"alg": "RS256", "kid": "k1"}
        match self.tamper:
            case "expired":
                claims.update(iat=now - 7200, exp=now - 3600)
            case "audience":
                claims.update(aud="someone-else", azp="someone-else")
            case "nonce":
                claims["nonce"] = "a-nonce-cloudtap-never-sent"
            case "issuer":
                claims["iss"] = "https://evil.example"
            case "at_hash":
                claims["at_hash"] = "AAAAAAAAAAAAAAAAAAAAAA"
            case "forged":
                key = RSAKey.generate_key(2048, parameters={"kid": "k1"})
            case "hs256":
                key, header = OctKey.import_key(self.client_secret.encode()), {"alg": "HS256"}
            case "unsigned":

                def b64(doc: dict[str, Any]) -> str:
                    return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()

                return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."
        return jwt.encode(header, claims, key, algorithms=[header["alg"]])


def provider_app(provider: TestProvider) -> FastAPI:
    """The provider's endpoints."""
    app = FastAPI()

    @app.get("/.well-known/openid-configuration")
    def discovery() -> dict[str, Any]:
        base = provider.url
        return {
            "issuer": base, "authorization_endpoint": f"{base}/authorize", "token_endpoint": f"{base}/token",
            "jwks_uri": f"{base}/jwks", "response_types_supported": ["code"], "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"], "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        }  # fmt: skip

    @app.get("/jwks")
    def jwks() -> dict[str, Any]:
        return KeySet([provider.key]).as_dict(private=False)

    @app.get("/authorize")
    def authorize(request: Request) -> Response:
        q = dict(request.query_params)
        provider.authorize_requests.append(q)
        redirect_uri = q.get("redirect_uri", "")
        if q.get("client_id") != provider.client_id or redirect_uri not in provider.redirect_uris:
            return JSONResponse(
                {"error": "invalid_request", "error_description": "unknown client or redirect_uri"}, 400
            )
        user = provider.users.get(q.get("login_hint", "")) or provider.user
        if user is None:
            return RedirectResponse(add_params_to_uri(redirect_uri, [("error", "access_denied"),
                                                                     ("state", q.get("state", ""))]), 302)  # fmt: skip
        ok = (q.get("response_type") == "code" and "openid" in q.get("scope", "").split()
              and q.get("code_challenge_method") == "S256" and q.get("code_challenge") and q.get("nonce"))  # fmt: skip
        if not ok:
            return RedirectResponse(add_params_to_uri(redirect_uri, [("error", "invalid_request"),
                                                                     ("state", q.get("state", ""))]), 302)  # fmt: skip
        code = secrets.token_urlsafe(24)
        provider.codes[code] = {"user": user, "redirect_uri": redirect_uri, "nonce": q["nonce"],
                                "challenge": q["code_challenge"], "expires": time.time() + 60}  # fmt: skip
        return RedirectResponse(
            add_params_to_uri(redirect_uri, [("code", code), ("state", q.get("state", ""))]), 302
        )

    @app.post("/token")
    async def token(request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        client_id, client_secret, method = _client_credentials(request, form)
        seen = {"auth_method": method, "has_verifier": "code_verifier" in form, "pkce_ok": False}
        provider.token_requests.append(seen)
        if client_id != provider.client_id or client_secret != provider.client_secret:
            return JSONResponse({"error": "invalid_client"}, 401)
        grant = provider.codes.pop(form.get("code", ""), None)
        if form.get("grant_type") != "authorization_code" or grant is None or grant["expires"] < time.time():
            return JSONResponse({"error": "invalid_grant"}, 400)
        if form.get("redirect_uri") != grant["redirect_uri"]:
            return JSONResponse({"error": "invalid_grant", "error_description": "redirect_uri"}, 400)
        seen["pkce_ok"] = create_s256_code_challenge(form.get("code_verifier", "")) == grant["challenge"]
        if not seen["pkce_ok"]:
            return JSONResponse({"error": "invalid_grant", "error_description": "PKCE"}, 400)
        access_token = secrets.token_urlsafe(24)
        return JSONResponse({"access_token": access_token, "token_type": "Bearer", "expires_in": 300,
                             "id_token": provider.id_token(grant, access_token)},
                            headers={"Cache-Control": "no-store"})  # fmt: skip

    return app


def _client_credentials(request: Request, form: dict[str, str]) -> tuple[str | None, str | None, str]:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("basic "):
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None, None, "client_secret_basic"
        return unquote(user), unquote(password), "client_secret_basic"
    return form.get("client_id"), form.get("client_secret"), "client_secret_post"


@contextmanager
def serve(app: Any, tls: Any = None) -> Iterator[str]:
    """``app`` on 127.0.0.1 (a free port) in a uvicorn thread, over HTTPS with ``tls`` (a
    :class:`cloudtap.tls.CertFiles`); yields its base URL."""
    ssl: dict[str, Any] = (
        {"ssl_certfile": str(tls.cert), "ssl_keyfile": str(tls.key)} if tls is not None else {}
    )
    with serve_in_thread(app, lifespan="off", **ssl) as url:
        yield url


@contextmanager
def serve_provider(tls: Any = None) -> Iterator[TestProvider]:
    """A running test provider (its ``url`` is the issuer), over HTTPS with ``tls``."""
    provider = TestProvider()
    with serve(provider_app(provider), tls) as url:
        provider.url = url
        yield provider

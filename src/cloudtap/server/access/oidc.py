"""Single sign-on: the OpenID Connect relying party (authorization code flow with PKCE, state and nonce).

:meth:`RelyingParty.begin` makes a random ``state``, ``nonce``, PKCE verifier (S256) and browser binding
and keeps them server-side with the local path to return to (:class:`PendingLogins`: in memory, used once,
10 minutes). :meth:`RelyingParty.finish` takes the pending login back by its ``state`` (one the server did
not issue, or already used, is refused), checks the browser binding, trades the code at the token endpoint
(verifier and client credentials), then checks the ID token: signature against the provider's JWKS
(asymmetric algorithms only), ``iss``, ``aud``/``azp``, ``exp``/``nbf``/``iat`` (60 s leeway), ``nonce`` and
``at_hash``. The groups claim maps to role bindings through ``auth.oidc.group_roles``.
"""

from __future__ import annotations

import ipaddress
import secrets
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from authlib.oauth2.auth import ClientAuth
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri, prepare_token_request
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from authlib.oidc.core import CodeIDToken
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet

from cloudtap.errors import CloudtapError
from cloudtap.server.access.credentials import same
from cloudtap.server.access.principal import RoleBinding
from cloudtap.server.access.service import AuthError
from cloudtap.server.settings import OidcSection

#: ID token signature algorithms accepted: asymmetric only (no ``none``, no HMAC with the client secret).
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
LEEWAY_S = 60
PENDING_TTL_S = 600.0
_METADATA_TTL_S = 3600.0
_JWKS_MIN_REFRESH_S = 30.0


@dataclass(frozen=True)
class Pending:
    """A login on its way through the provider (never leaves the server, except ``state`` and ``binding``)."""

    state: str
    nonce: str
    verifier: str
    binding: str  #: random value also set as a cookie in the browser that started the login
    redirect_uri: str
    next: str
    expires_at: float


@dataclass(frozen=True)
class Identity:
    """Who the provider vouched for, and the bindings their groups map to (empty: no mapped group)."""

    name: str
    subject: str
    groups: tuple[str, ...]
    bindings: tuple[RoleBinding, ...]


class PendingLogins:
    """Pending logins by ``state``: each taken at most once, gone after ``ttl_s``, at most ``limit`` kept."""

    def __init__(
        self, ttl_s: float = PENDING_TTL_S, limit: int = 10_000, clock: Callable[[], float] = time.time
    ) -> None:
        self.ttl_s = ttl_s
        self.limit = limit
        self.clock = clock
        self._items: OrderedDict[str, Pending] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, pending: Pending) -> None:
        """Keep a new pending login (the oldest go first when full)."""
        with self._lock:
            now = self.clock()
            while self._items and (
                len(self._items) >= self.limit or next(iter(self._items.values())).expires_at <= now
            ):
                self._items.popitem(last=False)
            self._items[pending.state] = pending

    def take(self, state: str) -> Pending | None:
        """The pending login of ``state``, removed; None when unknown, used or expired."""
        with self._lock:
            pending = self._items.pop(state, None)
        if pending is None or pending.expires_at <= self.clock():
            return None
        return pending

    def __len__(self) -> int:
        return len(self._items)


def parse_group_roles(group_roles: dict[str, list[dict[str, Any]]]) -> dict[str, tuple[RoleBinding, ...]]:
    """``auth.oidc.group_roles`` as bindings; CloudtapError names a bad entry."""
    out = {}
    for group, docs in group_roles.items():
        try:
            out[group] = tuple(RoleBinding.parse(d) for d in docs)
        except (ValueError, AttributeError, TypeError) as exc:
            raise CloudtapError(f"auth.oidc.group_roles[{group!r}]: {exc}") from exc
    return out


def merge_bindings(bindings: Iterable[RoleBinding]) -> tuple[RoleBinding, ...]:
    """One binding per role: on every project if any was, else on the union of their projects."""
    merged: dict[str, frozenset[str] | None] = {}
    for b in bindings:
        if b.role in merged and merged[b.role] is None:
            continue
        merged[b.role] = None if b.projects is None else (merged.get(b.role) or frozenset()) | b.projects
    return tuple(RoleBinding(role, projects) for role, projects in merged.items())


def check_url(url: str, what: str) -> str:
    """``url`` if it is https (or http on loopback, for tests and local providers), else CloudtapError."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme == "https" and host:
        return url
    if parts.scheme == "http" and (host == "localhost" or _is_loopback(host)):
        return url
    raise CloudtapError(f"{what} {url!r} must be an https:// URL")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class RelyingParty:
    """This server as an OpenID Connect client of one provider.

    Args:
        section: ``auth.oidc``.
        clock: seconds since the epoch (tests pin it).
        transport: an httpx transport (tests); default the network, verified with ``ca_file`` when set.
    """

    def __init__(self, section: OidcSection, clock: Callable[[], float] = time.time,
                 transport: httpx.BaseTransport | None = None) -> None:  # fmt: skip
        self.section = section
        self.issuer = check_url(section.issuer.rstrip("/"), "auth.oidc.issuer")
        self.group_roles = parse_group_roles(section.group_roles)
        if "openid" not in section.scopes:
            raise CloudtapError("auth.oidc.scopes must include 'openid'")
        self.clock = clock
        self.pending = PendingLogins(clock=clock)
        verify: ssl.SSLContext | bool = True
        if section.ca_file is not None:
            try:
                verify = ssl.create_default_context(cafile=str(section.ca_file))
            except (OSError, ssl.SSLError) as exc:
                raise CloudtapError(f"auth.oidc.ca_file {section.ca_file}: {exc}") from exc
        self._http = httpx.Client(verify=verify, timeout=10.0, follow_redirects=False, transport=transport)
        self._lock = threading.Lock()
        self._metadata: dict[str, Any] | None = None
        self._metadata_at = 0.0
        self._keys: KeySet | None = None
        self._keys_at = 0.0

    def close(self) -> None:
        """Close the HTTP client."""
        self._http.close()

    # -- provider documents ----------------------------------------------------------------------
    def _get_json(self, url: str, what: str) -> dict[str, Any]:
        try:
            resp = self._http.get(url, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise AuthError(
                502, f"cannot reach the identity provider for its {what} at {url}: {exc}"
            ) from exc
        if resp.status_code != 200:
            raise AuthError(
                502, f"the identity provider answered HTTP {resp.status_code} for its {what} at {url}"
            )
        try:
            doc = resp.json()
        except ValueError as exc:
            raise AuthError(502, f"the identity provider's {what} at {url} is not JSON") from exc
        if not isinstance(doc, dict):
            raise AuthError(502, f"the identity provider's {what} at {url} is not a JSON object")
        return doc

    def metadata(self) -> dict[str, Any]:
        """The provider's discovery document (cached an hour); 502 when unreachable or inconsistent."""
        with self._lock:
            if self._metadata is not None and self.clock() - self._metadata_at < _METADATA_TTL_S:
                return self._metadata
        doc = self._get_json(f"{self.issuer}/.well-known/openid-configuration", "discovery document")
        if str(doc.get("issuer", "")).rstrip("/") != self.issuer:
            raise AuthError(
                502, f"the discovery document names issuer {doc.get('issuer')!r}, not {self.issuer!r}"
            )
        for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            if not isinstance(doc.get(key), str):
                raise AuthError(502, f"the discovery document has no {key}")
            try:
                check_url(doc[key], key)
            except CloudtapError as exc:
                raise AuthError(502, f"the discovery document's {exc}") from exc
        with self._lock:
            self._metadata, self._metadata_at = doc, self.clock()
        return doc

    def _key_set(self, refresh: bool = False) -> KeySet:
        with self._lock:
            fresh = self.clock() - self._keys_at < _JWKS_MIN_REFRESH_S
            if self._keys is not None and (not refresh or fresh):
                return self._keys
        doc = self._get_json(self.metadata()["jwks_uri"], "signing keys (JWKS)")
        try:
            keys = KeySet.import_key_set(doc)  # type: ignore[arg-type]
        except (JoseError, ValueError, TypeError, KeyError) as exc:
            raise AuthError(502, f"the identity provider's JWKS is unusable: {exc}") from exc
        with self._lock:
            self._keys, self._keys_at = keys, self.clock()
        return keys

    # -- the flow ---------------------------------------------------------------------------------
    def begin(self, redirect_uri: str, next_path: str) -> tuple[str, Pending]:
        """Start a login: the provider's authorization URL, and the pending login kept for the callback."""
        meta = self.metadata()
        pending = Pending(state=secrets.token_urlsafe(32), nonce=secrets.token_urlsafe(32),
                          verifier=secrets.token_urlsafe(48), binding=secrets.token_urlsafe(32),
                          redirect_uri=redirect_uri, next=next_path,
                          expires_at=self.clock() + self.pending.ttl_s)  # fmt: skip
        methods = meta.get("code_challenge_methods_supported")
        if isinstance(methods, list) and "S256" not in methods:
            raise AuthError(502, "the identity provider does not support PKCE with S256")
        url = prepare_grant_uri(meta["authorization_endpoint"], self.section.client_id, "code",
                                redirect_uri=redirect_uri, scope=" ".join(self.section.scopes), state=pending.state,
                                nonce=pending.nonce, code_challenge=create_s256_code_challenge(pending.verifier),
                                code_challenge_method="S256")  # fmt: skip
        self.pending.add(pending)
        return url, pending

    def take(self, state: str, binding: str | None) -> Pending:
        """The pending login of a callback's ``state``; 400 when the server did not issue it, or it was used,
        expired, or started in another browser."""
        pending = self.pending.take(state) if state else None
        if pending is None:
            raise AuthError(400, "unknown, expired or already used login state: start the login again")
        if not same(binding, pending.binding):
            raise AuthError(
                400, "this login was started in another browser (or its cookie is gone): start again"
            )
        return pending

    def finish(self, pending: Pending, code: str) -> Identity:
        """Trade the code for tokens, check the ID token, map the groups; AuthError (401/403/502) otherwise."""
        tokens = self._exchange(pending, code)
        claims = self.verify_id_token(tokens["id_token"], pending.nonce, tokens.get("access_token"))
        name = claims.get(self.section.username_claim)
        if not isinstance(name, str) or not name:
            raise AuthError(
                403, f"the ID token has no {self.section.username_claim!r} claim to name the user"
            )
        groups = claims.get(self.section.groups_claim) or []
        if isinstance(groups, str):
            groups = [groups]
        if not isinstance(groups, list):
            raise AuthError(
                403, f"the ID token's {self.section.groups_claim!r} claim is not a list of groups"
            )
        group_names = tuple(str(g) for g in groups)
        return Identity(name, str(claims["sub"]), group_names, self.bindings_for(group_names))

    def bindings_for(self, groups: Iterable[str]) -> tuple[RoleBinding, ...]:
        """The union of the bindings of every mapped group (empty: the user is in no mapped group)."""
        return merge_bindings(b for g in groups for b in self.group_roles.get(g, ()))

    def _exchange(self, pending: Pending, code: str) -> dict[str, Any]:
        meta = self.metadata()
        body = prepare_token_request("authorization_code", code=code, redirect_uri=pending.redirect_uri,
                                     code_verifier=pending.verifier)  # fmt: skip
        headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
        url, headers, body = ClientAuth(self.section.client_id, self.section.client_secret,
                                        self._auth_method(meta)).prepare("POST", meta["token_endpoint"], headers, body)  # fmt: skip
        try:
            resp = self._http.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise AuthError(502, f"cannot reach the identity provider's token endpoint: {exc}") from exc
        try:
            doc = resp.json()
        except ValueError:
            doc = {}
        if resp.status_code != 200 or not isinstance(doc, dict):
            error = (doc.get("error") if isinstance(doc, dict) else None) or f"HTTP {resp.status_code}"
            raise AuthError(401, f"the identity provider refused the code: {str(error)[:200]}")
        if not isinstance(doc.get("id_token"), str):
            raise AuthError(
                502, "the identity provider's token answer has no ID token (is 'openid' a scope?)"
            )
        return doc

    def _auth_method(self, meta: dict[str, Any]) -> str:
        if not self.section.client_secret:
            return "none"
        supported = meta.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
        if "client_secret_basic" not in supported and "client_secret_post" in supported:
            return "client_secret_post"
        return "client_secret_basic"

    def verify_id_token(self, id_token: str, nonce: str, access_token: str | None = None) -> dict[str, Any]:
        """The claims of a valid ID token; 401 naming what is wrong otherwise."""
        try:
            try:
                token = jwt.decode(id_token, self._key_set(), algorithms=ALGORITHMS)
            except InvalidKeyIdError:  # the provider may have rotated its keys
                token = jwt.decode(id_token, self._key_set(refresh=True), algorithms=ALGORITHMS)
        except (JoseError, ValueError, TypeError) as exc:
            raise AuthError(401, f"the ID token's signature does not verify ({_why(exc)})") from exc
        issuer = str(self.metadata()["issuer"])
        options: dict[str, Any] = {
            "iss": {"essential": True, "value": issuer},
            "aud": {"essential": True, "value": self.section.client_id},
            "exp": {"essential": True},
            "nonce": {"essential": True, "value": nonce},
        }
        params = {"nonce": nonce, "client_id": self.section.client_id, "access_token": access_token}
        claims = CodeIDToken(token.claims, token.header, options, params)
        try:
            claims.validate(now=int(self.clock()), leeway=LEEWAY_S)
        except (JoseError, ValueError, TypeError) as exc:
            raise AuthError(401, f"the ID token is not valid here ({_why(exc)})") from exc
        return dict(claims)


def _why(exc: Exception) -> str:
    return str(getattr(exc, "description", "") or exc or type(exc).__name__)


_BUILD_LOCK = threading.Lock()


def relying_party_of(app: Any) -> RelyingParty | None:
    """The app's relying party (``app.state.oidc_rp``, built once), or None when ``auth.oidc`` is not set.

    Raises:
        CloudtapError: ``auth.oidc`` is invalid (call it at start to fail early).
    """
    section = app.state.settings.auth.oidc
    if section is None:
        return None
    with _BUILD_LOCK:
        rp = getattr(app.state, "oidc_rp", None)
        if rp is None or rp.section is not section:
            rp = app.state.oidc_rp = RelyingParty(section)
    return rp

"""ServerClient: how every CLI command calls the cloudtap API.

It sends ``Authorization: Bearer <token>``, verifies HTTPS against a CA file (or the system's trust
store), never follows redirects (a token is not handed to another host) and turns failures into one
:class:`ServerError` line: 401 says to run ``cloudtap login``, 403 gives the server's reason, a TLS
verification failure names ``--ca``. Only the standard library is used, so the CLI needs neither
httpx nor the server stack for remote commands.
"""

from __future__ import annotations

import http.client
import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cloudtap import __version__
from cloudtap.cli.errors import CliError
from cloudtap.cli.http_errors import describe_http_body, detail_text

DEFAULT_SERVER = "http://127.0.0.1:8470"
UNREACHABLE_HINT = "is `cloudtap server run` up?"


class ServerError(CliError):
    """A failed API call: ``status`` is the HTTP status (0 when there was no answer)."""

    def __init__(self, message: str, status: int = 0, detail: str | None = None) -> None:
        super().__init__(message, 2 if status in (400, 404, 422) else 1)
        self.status = status
        self.detail = detail


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Refuse redirects: the Authorization header would follow them anywhere."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def is_loopback(url: str) -> bool:
    """True when ``url`` points at this host."""
    host = (urllib.parse.urlsplit(url).hostname or "").lower()
    return host in ("localhost", "::1") or host.startswith("127.")


class Streamed:
    """An answer being downloaded: its headers and its body in chunks."""

    def __init__(self, response: Any, client: ServerClient) -> None:
        self._response = response
        self._client = client
        self.status: int = response.status
        self.headers: Mapping[str, str] = response.headers

    @property
    def length(self) -> int | None:
        """``Content-Length``, if the server sent one."""
        value = self.headers.get("Content-Length")
        return int(value) if value and value.isdigit() else None

    def chunks(self, size: int = 1 << 20) -> Iterator[bytes]:
        """The body, ``size`` bytes at a time; a broken transfer is a ServerError."""
        while True:
            try:
                chunk = self._response.read(size)
            except (OSError, http.client.HTTPException) as exc:
                raise ServerError(f"the transfer from {self._client.base} broke off: {exc}") from exc
            if not chunk:
                return
            yield chunk


class ServerClient:
    """Calls the API of the server at ``server_url``.

    Args:
        server_url: ``http(s)://host:port`` (a path prefix is kept).
        token: API token sent as a bearer credential (None: anonymous, for login).
        ca_file: PEM CA bundle that signed the server's certificate (None: the system trust store).
        timeout_s: socket timeout of one call.
        hint: added to "cannot reach" errors.
    """

    def __init__(self, server_url: str, token: str | None = None, ca_file: str | Path | None = None,
                 timeout_s: float = 60.0, hint: str = UNREACHABLE_HINT) -> None:  # fmt: skip
        if not server_url.startswith(("http://", "https://")):
            raise CliError(f"server URL must start with http:// or https://, got {server_url!r}", 2)
        self.base = server_url.rstrip("/")
        self.token = token
        self.ca_file = Path(ca_file).expanduser() if ca_file else None
        self.timeout_s = timeout_s
        self.hint = hint
        self._opener: urllib.request.OpenerDirector | None = None

    @property
    def token_in_clear(self) -> bool:
        """True when the token would cross the network unencrypted (http:// to another host)."""
        return bool(self.token) and self.base.startswith("http://") and not is_loopback(self.base)

    # -- JSON calls -------------------------------------------------------------------------------
    def get_json(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        """``GET path`` -> the decoded JSON answer."""
        return self.call_json("GET", path, params=params)

    def post_json(self, path: str, body: Any = None, params: Mapping[str, Any] | None = None) -> Any:
        """``POST path`` with a JSON body (none: empty) -> the decoded answer."""
        return self.call_json("POST", path, body, params)

    def put_json(self, path: str, body: Any) -> Any:
        """``PUT path`` with a JSON body -> the decoded answer."""
        return self.call_json("PUT", path, body)

    def delete_json(self, path: str) -> Any:
        """``DELETE path`` -> the decoded answer (None when empty)."""
        return self.call_json("DELETE", path)

    def call_json(self, method: str, path: str, body: Any = None, params: Mapping[str, Any] | None = None,
                  timeout_s: float | None = None) -> Any:  # fmt: skip
        """Any method with an optional JSON body; the answer decoded (None when empty)."""
        data = json.dumps(body).encode() if body is not None else (b"" if method in ("POST", "PUT") else None)
        headers = {"Content-Type": "application/json"} if data is not None else {}
        with self._open(method, path, data, headers, params, timeout_s) as resp:
            raw = self._read(resp)
        try:
            return json.loads(raw) if raw else None
        except ValueError as exc:
            raise ServerError(f"{self.base}{path} answered something other than JSON: is this a cloudtap server?",
                              resp.status) from exc  # fmt: skip

    # -- raw bodies -------------------------------------------------------------------------------
    def post_raw(
        self, path: str, data: bytes, headers: Mapping[str, str], timeout_s: float | None = None
    ) -> bytes:
        """``POST path`` with ``data`` and ``headers`` as given -> the answer's bytes (Arrow IPC...)."""
        with self._open("POST", path, data, headers, None, timeout_s) as resp:
            return self._read(resp)

    @contextmanager
    def stream(
        self, method: str, path: str, body: Any = None, timeout_s: float | None = None
    ) -> Iterator[Streamed]:
        """A download (PCAP): the answer with its body unread, closed on exit."""
        data = json.dumps(body).encode() if body is not None else None
        headers = (
            {"Content-Type": "application/json", "Accept": "*/*"} if data is not None else {"Accept": "*/*"}
        )
        resp = self._open(method, path, data, headers, None, timeout_s)
        try:
            yield Streamed(resp, self)
        finally:
            resp.close()

    # -- plumbing ---------------------------------------------------------------------------------
    def _read(self, resp: Any) -> bytes:
        try:
            return resp.read()  # type: ignore[no-any-return]
        except (OSError, http.client.HTTPException) as exc:
            raise ServerError(f"the answer from {self.base} broke off: {exc}") from exc

    def _opener_of(self) -> urllib.request.OpenerDirector:
        if self._opener is None:
            handlers: list[Any] = [_NoRedirect()]
            if self.base.startswith("https://"):
                handlers.append(urllib.request.HTTPSHandler(context=self._ssl_context()))
            self._opener = urllib.request.build_opener(*handlers)
        return self._opener

    def _ssl_context(self) -> ssl.SSLContext:
        from cloudtap.errors import CloudtapError
        from cloudtap.tls import client_ssl_context

        if self.ca_file is not None and not self.ca_file.is_file():
            raise CliError(f"no CA file {self.ca_file} (--ca / CLOUDTAP_CA)", 2)
        try:
            return client_ssl_context(self.ca_file)
        except CloudtapError as exc:
            raise CliError(f"{exc} (--ca / CLOUDTAP_CA)", 2) from exc

    def _open(self, method: str, path: str, data: bytes | None, headers: Mapping[str, str],
              params: Mapping[str, Any] | None, timeout_s: float | None) -> Any:  # fmt: skip
        query = urllib.parse.urlencode({k: v for k, v in (params or {}).items() if v is not None}, doseq=True)
        url = self.base + path + (f"?{query}" if query else "")
        sent = {"Accept": "application/json", "User-Agent": f"cloudtap-cli/{__version__}", **headers}
        if self.token:
            sent["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(url, data=data, headers=sent, method=method)
        try:
            return self._opener_of().open(request, timeout=timeout_s or self.timeout_s)
        except urllib.error.HTTPError as exc:
            raise self._refused(exc) from exc
        except urllib.error.URLError as exc:
            raise self._unreachable(exc.reason) from exc
        except (OSError, http.client.HTTPException) as exc:
            raise self._unreachable(exc) from exc

    def _refused(self, exc: urllib.error.HTTPError) -> ServerError:
        try:
            body = exc.read()
        except (OSError, http.client.HTTPException):
            body = b""
        detail = detail_text(body)
        if 300 <= exc.code < 400:
            where = exc.headers.get("Location", "elsewhere") if exc.headers else "elsewhere"
            return ServerError(
                f"{self.base} redirects to {where}: give that URL with --server", exc.code, detail
            )
        message = self.explain(exc.code, detail) or describe_http_body(exc.code, str(exc.reason), body)
        return ServerError(message, exc.code, detail)

    def explain(self, status: int, detail: str | None) -> str | None:
        """The sentence for a refused credential (401), a missing permission (403) or an unverified
        certificate (status 0, ``detail`` naming it); None for other failures."""
        login = f"`cloudtap login --server {self.base}`"
        if status == 401:
            if not self.token:
                return f"not logged in to {self.base}: run {login} (or give --token / CLOUDTAP_TOKEN)"
            return f"not logged in or the token expired{f' ({detail})' if detail else ''}: run {login}"
        if status == 403:
            return f"permission denied: {detail or 'the server refused the request'}"
        if status == 0 and detail and "CERTIFICATE_VERIFY_FAILED" in detail:
            return self._unverified(detail.rpartition("CERTIFICATE_VERIFY_FAILED]")[2].strip(" ()") or detail)
        return None

    def _unverified(self, what: str) -> str:
        return (f"cannot verify the TLS certificate of {self.base}: {what}; give the CA that signed it with "
                "--ca FILE (or CLOUDTAP_CA, or `cloudtap login --ca FILE`)")  # fmt: skip

    def _unreachable(self, reason: Any) -> ServerError:
        if isinstance(reason, ssl.SSLCertVerificationError):
            return ServerError(self._unverified(reason.verify_message or str(reason)))
        if isinstance(reason, ssl.SSLError):
            return ServerError(
                f"TLS with {self.base} failed: {reason.reason or reason} (does it serve HTTPS?)"
            )
        text = str(reason) or type(reason).__name__
        if self.base.startswith("http://") and isinstance(
            reason, ConnectionResetError | http.client.HTTPException
        ):
            return ServerError(
                f"{self.base} closed the connection: {text} (does it serve HTTPS? use https://)"
            )
        if isinstance(reason, TimeoutError):
            return ServerError(f"{self.base} did not answer within {self.timeout_s:.0f} s")
        return ServerError(f"cannot reach {self.base}: {text} ({self.hint})")

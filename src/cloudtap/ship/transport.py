"""Transports: how one encoded batch leaves the agent (HTTP, files, or a test double).

Every transport answers :class:`SendResult`: ``ok`` (stored, or already stored: a duplicate), ``retry``
(try the same batch again later: server down, 5xx, timeouts, throttling, auth or URL trouble) or
neither (the server rejected the batch itself: never resend it, dead-letter it).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Protocol

from cloudtap.errors import ConfigError

INGEST_PATH = "/api/v1/ingest"
CONTENT_TYPE = "application/vnd.cloudtap.batch"
AGENT_HEADER = "X-Cloudtap-Agent"
SEQ_HEADER = "X-Cloudtap-Seq"
#: 4xx answers that reject the batch itself: resending it cannot succeed, it goes to the dead letters.
#: Other 4xx (401/403 token, 404/405 URL, 408 timeout, 425, 429 throttling) are the agent's or the
#: network's problem, not the batch's: they are retried so nothing is lost once it is fixed.
REJECT_STATUSES = frozenset({400, 409, 411, 413, 415, 422})


@dataclass(frozen=True)
class SendResult:
    """Outcome of sending one batch."""

    ok: bool  #: stored (or a duplicate of a stored batch): ack it
    retry: bool  #: not stored, try again later
    status: int  #: HTTP status (0 when no answer: connection error, file transport)
    detail: str = ""  #: server's ``detail``, error text, or "duplicate"
    #: the server's ``Retry-After`` (429 throttling, 503), seconds: the sender waits at least this long
    retry_after_s: float | None = None


#: statuses whose ``Retry-After`` the sender honours
RETRY_AFTER_STATUSES = frozenset({429, 503})
#: longest ``Retry-After`` honoured (seconds): a wrong header must not stall an agent for hours
MAX_RETRY_AFTER_S = 300.0


def classify_status(status: int, detail: str = "", retry_after_s: float | None = None) -> SendResult:
    """Map an HTTP status to a :class:`SendResult` (2xx ok, rejects final, everything else retried).

    Args:
        status: HTTP status code.
        detail: text to carry along.
        retry_after_s: the answer's ``Retry-After`` in seconds (kept on retried results only).
    Returns:
        The result.
    """
    if 200 <= status < 300:
        return SendResult(True, False, status, detail)
    if status in REJECT_STATUSES:
        return SendResult(False, False, status, detail)
    return SendResult(False, True, status, detail, retry_after_s)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay-seconds or an HTTP date); None when absent or bad.

    Capped at :data:`MAX_RETRY_AFTER_S`; a date in the past gives 0.
    """
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


class Transport(Protocol):
    """Sends one batch somewhere."""

    def send(self, agent_id: str, seq: int, data: bytes) -> SendResult:
        """Deliver batch ``seq`` of ``agent_id``."""
        ...

    def close(self) -> None:
        """Release connections and files."""
        ...


class HttpTransport:
    """POSTs batches to the server's ingest endpoint over one keep-alive connection pool.

    The server takes a batch only with ``Authorization: Bearer <credential>``: an agent's own credential
    (issued at registration, rotated at each one: hence a callable, asked at every send) whose agent
    name the batch carries, or an admin user's API token (``cloudtap import``).
    """

    def __init__(
        self,
        url: str,
        timeout_s: float = 10.0,
        token: str | Callable[[], str | None] | None = None,
        transport: Any = None,
    ) -> None:
        """Create the client.

        Args:
            url: server base URL (``http://host:8080``) or the full ingest URL (ending in ``/api/v1/ingest``).
            timeout_s: connect/read/write timeout of one request.
            token: sent as ``Authorization: Bearer <token>``; a callable is asked at every send, and while it
                answers None (not registered yet) nothing is sent: the batch is retried later.
            transport: an ``httpx.BaseTransport`` to use instead of the network (tests).
        """
        import httpx

        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"server url must start with http:// or https://, got {url!r}")
        self.url = url if url.rstrip("/").endswith(INGEST_PATH) else url.rstrip("/") + INGEST_PATH
        headers = {"Content-Type": CONTENT_TYPE, "User-Agent": "cloudtap-agent"}
        self._token = token
        self._httpx = httpx
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout_s),
            headers=headers,
            transport=transport,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        )

    def send(self, agent_id: str, seq: int, data: bytes) -> SendResult:
        """POST one batch.

        Args:
            agent_id: sent as ``X-Cloudtap-Agent`` (the body carries it too).
            seq: sent as ``X-Cloudtap-Seq``.
            data: the encoded batch.
        Returns:
            The classified answer; connection errors and timeouts are ``retry``.
        """
        headers = {AGENT_HEADER: agent_id, SEQ_HEADER: str(seq)}
        token = self._token() if callable(self._token) else self._token
        if token:
            headers["Authorization"] = f"Bearer {token}"
        elif callable(self._token):
            return SendResult(False, True, 0, "no credential yet: the agent has not registered with its controller")
        try:
            response = self._client.post(self.url, content=data, headers=headers)
        except self._httpx.HTTPError as exc:
            return SendResult(False, True, 0, f"{type(exc).__name__}: {exc}")
        detail = _detail(response)
        retry_after = None
        if response.status_code in RETRY_AFTER_STATUSES:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
        result = classify_status(response.status_code, detail, retry_after)
        if result.ok and not detail:
            try:
                body = response.json()
            except ValueError:
                body = None
            if isinstance(body, dict) and body.get("duplicate"):
                return SendResult(True, False, response.status_code, "duplicate")
        return result

    def close(self) -> None:
        self._client.close()


def _detail(response: Any) -> str:
    if 200 <= response.status_code < 300:
        return ""
    try:
        body = response.json()
    except ValueError:
        return str(response.text)[:500]
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])[:500]
    return str(body)[:500]


class FileTransport:
    """Writes each batch to ``<directory>/<agent_id>/<seq:020d>.ctap`` (air-gapped sites carry them over).

    Files appear atomically (written, fsync'd, renamed); a batch written twice overwrites itself.
    """

    def __init__(self, directory: str | Path, fsync: bool = True) -> None:
        self.directory = Path(directory)
        self.fsync = fsync
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create batch directory {self.directory}: {exc.strerror}") from exc

    def path(self, agent_id: str, seq: int) -> Path:
        """Where batch ``seq`` of ``agent_id`` is written."""
        return self.directory / _safe_name(agent_id) / f"{seq:020d}.ctap"

    def send(self, agent_id: str, seq: int, data: bytes) -> SendResult:
        target = self.path(agent_id, seq)
        tmp = target.with_name(f".{target.name}.part")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                if self.fsync:
                    os.fsync(fh.fileno())
            os.replace(tmp, target)
        except OSError as exc:  # disk full, removed mount...: keep it in the spool and retry
            return SendResult(False, True, 0, f"{target}: {exc.strerror or exc}")
        return SendResult(True, False, 0, str(target))

    def close(self) -> None:
        return None


def _safe_name(agent_id: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]", "_", agent_id).lstrip(".")
    return name or "_"


Handler = Callable[[str, int, bytes], "SendResult | int"]


class MockTransport:
    """Calls ``handler(agent_id, seq, data)`` instead of a network (tests).

    The handler returns a :class:`SendResult` or an HTTP status (classified like the server's answer);
    an exception it raises counts as a connection error (retry). Every call is kept in ``calls``.
    """

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.calls: list[tuple[str, int, int]] = []  # (agent_id, seq, bytes)
        self.closed = False

    def send(self, agent_id: str, seq: int, data: bytes) -> SendResult:
        self.calls.append((agent_id, seq, len(data)))
        try:
            answer = self.handler(agent_id, seq, data)
        except Exception as exc:  # noqa: BLE001 - any handler failure stands for a network failure
            return SendResult(False, True, 0, f"{type(exc).__name__}: {exc}")
        if isinstance(answer, SendResult):
            return answer
        return classify_status(int(answer))

    def close(self) -> None:
        self.closed = True

"""Transports: HTTP answer classification and headers, file drop, mock."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from cloudtap.ship.transport import (
    AGENT_HEADER,
    SEQ_HEADER,
    FileTransport,
    HttpTransport,
    MockTransport,
    SendResult,
    classify_status,
)
from cloudtap.ship.wire import decode_batch, encode_batch

httpx = pytest.importorskip("httpx")

BATCH = encode_batch("hv-9", 5, {})


def http_with(handler) -> HttpTransport:  # type: ignore[no-untyped-def]
    return HttpTransport(
        "http://server:8080/", timeout_s=2, token="s3cret", transport=httpx.MockTransport(handler)
    )


def test_http_sends_body_identity_headers_and_token() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"stored": True, "duplicate": False})

    transport = http_with(handler)
    assert transport.url == "http://server:8080/api/v1/ingest"
    result = transport.send("hv-9", 5, BATCH)
    assert result == SendResult(True, False, 200, "")
    request = seen[0]
    assert request.method == "POST" and request.url.path == "/api/v1/ingest"
    assert request.headers[AGENT_HEADER] == "hv-9" and request.headers[SEQ_HEADER] == "5"
    assert request.headers["Authorization"] == "Bearer s3cret"
    assert decode_batch(request.content).seq == 5
    transport.close()


@pytest.mark.parametrize(
    ("status", "body", "ok", "retry", "detail"),
    [
        (200, {"stored": True, "duplicate": True}, True, False, "duplicate"),
        (400, {"detail": "bad magic"}, False, False, "bad magic"),
        (422, {"detail": "row count"}, False, False, "row count"),
        (413, {"detail": "too large"}, False, False, "too large"),
        (401, {"detail": "bad token"}, False, True, "bad token"),  # agent misconfigured: keep, retry
        (404, {"detail": "Not Found"}, False, True, "Not Found"),
        (429, {"detail": "slow down"}, False, True, "slow down"),
        (500, {"detail": "db down"}, False, True, "db down"),
        (503, None, False, True, "maintenance"),
    ],
)
def test_http_classification(status: int, body: object, ok: bool, retry: bool, detail: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if body is None:
            return httpx.Response(status, text="maintenance")
        return httpx.Response(status, json=body)

    result = http_with(handler).send("hv-9", 5, BATCH)
    assert (result.ok, result.retry, result.status, result.detail) == (ok, retry, status, detail)


def test_http_asks_a_rotating_credential_at_every_send_and_waits_for_one() -> None:
    seen: list[str] = []
    current: list[str | None] = [None]

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("Authorization", ""))
        return httpx.Response(200, json={"stored": True, "duplicate": False})

    t = HttpTransport("http://server:8080", token=lambda: current[0], transport=httpx.MockTransport(handler))
    waiting = t.send("a1", 1, b"x")
    assert waiting.retry and not waiting.ok and "not registered" in waiting.detail and seen == []  # nothing sent
    current[0] = "cta_ag-1_one"
    assert t.send("a1", 1, b"x").ok
    current[0] = "cta_ag-1_two"  # a new registration rotated it
    assert t.send("a1", 2, b"x").ok
    assert seen == ["Bearer cta_ag-1_one", "Bearer cta_ag-1_two"]
    t.close()


def test_http_connection_refused_is_retry() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        port = sock.getsockname()[1]
        transport = HttpTransport(f"http://127.0.0.1:{port}", timeout_s=1)
        result = transport.send("hv-9", 5, BATCH)
        transport.close()
    assert (result.ok, result.retry, result.status) == (False, True, 0)
    assert "ConnectError" in result.detail


def test_http_rejects_bad_url() -> None:
    from cloudtap.errors import ConfigError

    with pytest.raises(ConfigError, match="http://"):
        HttpTransport("server:8080")


def test_file_transport_writes_atomically_and_idempotently(tmp_path: Path) -> None:
    transport = FileTransport(tmp_path)
    first = transport.send("hv/9", 5, BATCH)
    assert first.ok and not first.retry
    path = transport.path("hv/9", 5)
    assert path == tmp_path / "hv_9" / f"{5:020d}.ctap"
    assert decode_batch(path.read_bytes()).agent_id == "hv-9"
    assert transport.send("hv/9", 5, BATCH).ok  # resent: same file, same bytes
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_file_transport_failure_is_retry(tmp_path: Path) -> None:
    transport = FileTransport(tmp_path)
    (tmp_path / "blocked").write_text("a file where the agent's folder should be")
    result = transport.send("blocked", 1, BATCH)
    assert (result.ok, result.retry) == (False, True)


def test_mock_transport_maps_statuses_and_exceptions() -> None:
    answers = iter([500, ConnectionError("down"), 400, SendResult(True, False, 200, "duplicate"), 200])

    def handler(agent_id: str, seq: int, data: bytes) -> object:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    mock = MockTransport(handler)  # type: ignore[arg-type]
    results = [mock.send("a", i, b"x") for i in range(5)]
    assert [(r.ok, r.retry) for r in results] == [
        (False, True),
        (False, True),
        (False, False),
        (True, False),
        (True, False),
    ]
    assert "ConnectionError: down" in results[1].detail
    assert [c[1] for c in mock.calls] == [0, 1, 2, 3, 4]
    mock.close()
    assert mock.closed
    assert classify_status(204).ok and not classify_status(409).retry
    assert classify_status(502).retry

"""POST /api/v1/ingest against hostile or broken agents: every refusal is a clear 4xx, counted by reason."""

from __future__ import annotations

import asyncio
import json
import struct
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pytest

from access_helpers import grant
from cloudtap.server.api.app import create_app
from cloudtap.server.ingest_group import store_unavailable
from cloudtap.server.settings import ServerSettings
from cloudtap.ship.frame import PREFIX_BYTES, read_header
from cloudtap.ship.wire import encode_batch

SMALL = encode_batch("agent-1", 1, {"flows": pa.table({"flow_id": pa.array([1, 2, 3], pa.uint64())})})


def app_for(store: Any, tmp_path: Path, coalesce_ms: float = 0) -> Any:
    """The server (1 MiB batches at most), and an admin token (imports any agent's batches)."""
    settings = ServerSettings.model_validate(
        {
            "ingest": {"coalesce_ms": coalesce_ms, "wal_dir": str(tmp_path / "wal")},
            "api": {"max_batch_mib": 1},
            "auth": {"db_path": str(tmp_path / "access.sqlite"), "audit_log": str(tmp_path / "audit.jsonl")},
        }
    )
    app = create_app(settings, store)
    app.state.test_auth = grant(app, "admin")
    return app


def post(app: Any, body: bytes | AsyncIterator[bytes], **headers: str) -> httpx.Response:
    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://t", headers=app.state.test_auth
        ) as client:
            return await client.post("/api/v1/ingest", content=body, headers=headers)

    return asyncio.run(run())


def with_header(frame: bytes, version: int | None = None, **fields: Any) -> bytes:
    """``frame`` with header fields (or the wire version) changed, CRCs made right again."""
    head = read_header(frame)
    obj = {**json.loads(frame[PREFIX_BYTES : head.header_bytes]), **fields}
    raw = json.dumps(obj).encode()
    prefix = struct.pack("<4sHHII", b"CTAP", version or 1, 0, len(raw), zlib.crc32(raw))
    return prefix + raw + frame[head.header_bytes :]


def stored_batches(store: Any) -> int:
    return int(store.command(f"SELECT count() FROM {store.database}.ingest_log"))


def test_oversized_batch_is_refused_while_it_streams(open_store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Over ``api.max_batch_mib``: 413 from the Content-Length, or once the streamed bytes pass it."""
    store = open_store()
    app = app_for(store, tmp_path)
    announced = post(app, b"\0" * (2 << 20))
    assert announced.status_code == 413
    assert announced.json()["detail"] == "request body over the 1 MiB limit (Content-Length: 2097152)"

    sent = 0

    async def endless() -> AsyncIterator[bytes]:  # chunked, no Content-Length, never ends
        nonlocal sent
        while True:
            sent += 64 << 10
            yield b"\0" * (64 << 10)

    streamed = post(app, endless())
    assert streamed.status_code == 413 and streamed.json()["detail"] == "request body over the 1 MiB limit"
    assert sent <= (1 << 20) + (128 << 10)  # stopped right after the limit
    stats = app.state.ingestor.stats
    assert stats.rejected == 2 and stats.rejected_by_reason == {"too large": 2}
    assert stored_batches(store) == 0


@pytest.mark.parametrize("coalesce_ms", [0, 50])
def test_unreadable_versions_and_kinds_are_refused_and_counted(
    open_store, tmp_path: Path, coalesce_ms: float
) -> None:  # type: ignore[no-untyped-def]
    store = open_store()
    app = app_for(store, tmp_path, coalesce_ms)
    newer = post(app, with_header(SMALL, schema_version=2))
    assert newer.status_code == 400
    assert "schema_version 2 is not supported (this build reads schema_version 1)" in newer.json()["detail"]
    wire = post(app, with_header(SMALL, version=2))
    assert (
        wire.status_code == 400 and "unsupported wire version 2 (this build reads 1)" in wire.json()["detail"]
    )
    kind = post(app, encode_batch("agent-1", 2, {"edges_10s": pa.table({"time_ns": [1]})}))
    assert kind.status_code == 400
    assert (
        "unknown stream kind(s) ['edges_10s']; expected ['edges_1s', 'edges_60s', 'flows', 'requests']"
        in kind.json()["detail"]
    )
    stats = app.state.ingestor.stats
    assert stats.rejected_by_reason == {"unsupported version": 2, "unknown kind": 1} and stats.rejected == 3
    assert stored_batches(store) == 0


@pytest.mark.parametrize("coalesce_ms", [0, 50])
def test_decompression_bomb_is_refused_with_400(open_store, tmp_path: Path, coalesce_ms: float) -> None:  # type: ignore[no-untyped-def]
    """A 1-row batch of 800 bytes that inflates to 64 MiB (far over 64 KiB per row): refused, not inflated."""
    junk = pa.Array.from_buffers(
        pa.binary(),
        1,
        [None, pa.py_buffer(np.array([0, 64 << 20], np.int32)), pa.py_buffer(np.zeros(64 << 20, np.uint8))],
    )
    bomb = encode_batch(
        "agent-1", 3, {"flows": pa.table({"flow_id": pa.array([1], pa.uint64()), "junk": junk})}
    )
    assert len(bomb) < 64 << 10
    store = open_store()
    app = app_for(store, tmp_path, coalesce_ms)
    answer = post(app, bomb, **{"X-Cloudtap-Agent": "agent-1", "X-Cloudtap-Seq": "3"})
    assert answer.status_code == 400
    assert "would decode to 64 MiB, over its limit of 1.062 MiB" in answer.json()["detail"]
    assert app.state.ingestor.stats.rejected_by_reason == {"too large": 1}


@pytest.mark.parametrize(
    ("error", "unavailable"),
    [
        (ConnectionRefusedError("connection refused"), True),
        (TimeoutError(), True),
        (
            RuntimeError("Code: 241. DB::Exception: Memory limit (total) exceeded (MEMORY_LIMIT_EXCEEDED)"),
            True,
        ),
        (RuntimeError("Code: 252. DB::Exception: Too many parts (TOO_MANY_PARTS)"), True),
        (RuntimeError("Code: 1001. DB::Exception: std::out_of_range (STD_EXCEPTION)"), False),
        (ValueError("flows: rejected by ClickHouse: (CANNOT_PARSE_IPV6) MEMORY_LIMIT_EXCEEDED"), False),
    ],
)
def test_store_unavailable_tells_the_store_from_the_data(error: Exception, unavailable: bool) -> None:
    """Only the store's own trouble fails a whole coalesced group; anything else is looked for per batch."""
    assert store_unavailable(error) is unavailable

"""POST /api/v1/ingest: agents ship record batches here.

Each batch comes with ``Authorization: Bearer <the agent's own credential>`` (issued at registration,
docs/controller.md) and must carry that agent's name; an admin user's API token may import batches of
any agent name (``cloudtap import --server``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Request
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as BodyRefused

from cloudtap.server.access.permissions import AGENT
from cloudtap.server.api.body_limit import read_body
from cloudtap.server.api.deps import SettingsDep
from cloudtap.server.api.guard import require
from cloudtap.server.api.routes.agents import batch_owner
from cloudtap.server.coalesce import Coalescer
from cloudtap.server.ingest import IngestError, Ingestor
from cloudtap.server.ingest_group import PreparedBatch
from cloudtap.server.ingest_wal import GroupWal
from cloudtap.server.settings import ServerSettings
from cloudtap.server.store.base import BatchKey
from cloudtap.ship.frame import WireError, read_header

router = APIRouter(prefix="/api/v1", tags=["ingest"])


class IngestAck(BaseModel):
    """The server stored the batch (or had stored it before: ``duplicate``)."""

    stored: bool
    duplicate: bool
    rows: dict[str, int]


def wal_directory(settings: ServerSettings, store: object) -> Path:
    """Write-ahead files of coalesced inserts: ``ingest.wal_dir``, else next to the chDB data, per database."""
    dsn = str(getattr(store, "dsn", settings.storage.dsn))
    database = str(getattr(store, "database", settings.storage.database))
    if settings.ingest.wal_dir is not None:
        return settings.ingest.wal_dir / database
    path = dsn[len("chdb://") :] if dsn.startswith("chdb://") else ""
    if path.startswith("/"):
        return Path(path) / "ingest-wal" / database
    return Path("/var/lib/cloudtap/ingest-wal") / database


def coalescer(app: FastAPI, settings: ServerSettings) -> Coalescer | None:
    """The app's coalescer (built on first use); None when ``ingest.coalesce_ms`` is 0."""
    if settings.ingest.coalesce_ms <= 0:
        return None
    found: Coalescer | None = getattr(app.state, "ingest_coalescer", None)
    if found is None:
        ingestor: Ingestor = app.state.ingestor
        wal = GroupWal(wal_directory(settings, app.state.store))
        found = Coalescer(ingestor, settings.ingest.coalesce_ms / 1000, settings.ingest.max_group_batches,
                          settings.ingest.max_group_rows, wal, settings.ingest.decode_threads,
                          settings.ingest.thread_nice)  # fmt: skip
        app.state.ingest_coalescer = found
    return found


#: longest Retry-After (seconds) of a 429: at twice the limit or more
MAX_RETRY_AFTER_S = 5


def _throttle(ingestor: Ingestor, merger: Coalescer | None, limit: int, agent: str | None, seq: int | None) -> None:
    """429 with ``Retry-After`` while ``limit`` batches wait in the coalescer (``ingest.max_pending_batches``).

    Decided from the HTTP headers only, before the body is read. A resend of a batch that waits already
    (same ``X-Cloudtap-Agent``/``X-Cloudtap-Seq``) goes through: it joins its group and adds nothing.
    A resend of a batch stored earlier is throttled like any other (telling it needs the store).
    """
    if merger is None or limit <= 0:
        return
    pending = merger.depth().batches
    if pending < limit:
        return
    if agent is not None and seq is not None and merger.holds(BatchKey(agent, seq)):
        return
    ingestor.throttled()
    retry_after = min(MAX_RETRY_AFTER_S, 1 + (pending - limit) * (MAX_RETRY_AFTER_S - 1) // limit)
    raise HTTPException(429, f"ingest queue full ({pending} batches pending): spool and resend in {retry_after}s",
                        headers={"Retry-After": str(retry_after)})  # fmt: skip


def _pending(ingestor: Ingestor, body: bytes, agent_id: str | None, seq: int | None) -> PreparedBatch:
    """The batch's key from its frame header (checked against the HTTP headers); decoded later."""
    head = ingestor.check_header(body, agent_id, seq)  # versions and kinds are refused here already
    return PreparedBatch(BatchKey(head.agent_id, head.seq), None, body, sum(head.rows.values()))


def _check_owner(ingestor: Ingestor, body: bytes, owner: str) -> None:
    """403 unless the frame header names the credential's agent: no agent ships as another, nor claims
    another's ``(agent, seq)`` to make its real batch a duplicate. A malformed frame is left to the 400 below."""
    try:
        head = read_header(body)
    except WireError:
        return
    if head.agent_id != owner:
        ingestor.rejected("agent credential mismatch",
                          f"batch of agent {head.agent_id!r} sent with {owner!r}'s credential", owner)  # fmt: skip
        raise HTTPException(403, f"this credential is agent {owner!r}'s; the batch is agent {head.agent_id!r}'s")


@router.post(
    "/ingest",
    response_model=IngestAck,
    responses={400: {"description": "malformed batch, unsupported wire or schema version, unknown kind, data the store refuses; nothing stored"},
               401: {"description": "missing, unknown or replaced agent credential (or user token)"},
               403: {"description": "the batch is another agent's, or the user may not import"},
               413: {"description": "batch too large"},
               429: {"description": "ingest queue full (ingest.max_pending_batches): resend after Retry-After seconds"},
               503: {"description": "the store failed; nothing acknowledged, resend the same batch"}},  # fmt: skip
    openapi_extra={"requestBody": {"content": {"application/vnd.cloudtap.batch": {"schema": {"type": "string", "format": "binary"}}}, "required": True}},
    dependencies=[Depends(require(AGENT))],
)
async def ingest(
    request: Request,
    settings: SettingsDep,
    x_cloudtap_agent: Annotated[str | None, Header()] = None,
    x_cloudtap_seq: Annotated[int | None, Header()] = None,
) -> IngestAck:
    """Store one batch exactly once (idempotent by agent and sequence number).

    Concurrent batches are coalesced (``ingest.coalesce_ms``) into one insert per table; the answer
    comes once that insert and the batch's ``ingest_log`` row are stored.
    """
    owner = batch_owner(request)  # the credential's agent (``Authorization: Bearer``); None: an importing admin
    ingestor: Ingestor = request.app.state.ingestor
    merger = coalescer(request.app, settings)
    _throttle(ingestor, merger, settings.ingest.max_pending_batches, x_cloudtap_agent, x_cloudtap_seq)
    try:  # never more than the limit in memory: refused as soon as the header or the stream says so
        body = await read_body(request, settings.api.max_batch_mib << 20)
    except BodyRefused as exc:  # 413 (over max_batch_mib), 400 (bad Content-Length)
        reason = "too large" if exc.status_code == 413 else "malformed"
        ingestor.rejected(reason, f"batch refused: {exc.detail}", owner)
        raise
    if owner is not None:
        _check_owner(ingestor, body, owner)
    try:
        # decoding, tagging and the blocking insert run off the event loop: heartbeats, long-polls and queries go on
        if merger is None:
            result = await run_in_threadpool(ingestor.ingest_bytes, body, x_cloudtap_agent, x_cloudtap_seq)
        else:  # only the frame's header is read here; the writer thread decodes, tags and stores
            result = await merger.submit(_pending(ingestor, body, x_cloudtap_agent, x_cloudtap_seq))
    except IngestError as exc:
        raise HTTPException(400, str(exc)) from exc
    except Exception as exc:  # the store failed: nothing is acknowledged, the agent resends
        if merger is None:
            raise
        raise HTTPException(503, f"insert failed, resend: {type(exc).__name__}: {exc}") from exc
    return IngestAck(stored=True, duplicate=result.duplicate, rows=result.rows)

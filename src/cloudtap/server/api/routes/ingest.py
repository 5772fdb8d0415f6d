"""POST /api/v1/ingest: agents ship record batches here."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Request
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from cloudtap.server.api.deps import SettingsDep
from cloudtap.server.ingest import IngestError, Ingestor

router = APIRouter(prefix="/api/v1", tags=["ingest"])


class IngestAck(BaseModel):
    """The server stored the batch (or had stored it before: ``duplicate``)."""

    stored: bool
    duplicate: bool
    rows: dict[str, int]


@router.post(
    "/ingest",
    response_model=IngestAck,
    responses={400: {"description": "malformed batch, nothing stored"}, 401: {"description": "bad agent token"},
               413: {"description": "batch too large"}},  # fmt: skip
    openapi_extra={"requestBody": {"content": {"application/vnd.cloudtap.batch": {"schema": {"type": "string", "format": "binary"}}}, "required": True}},
)
async def ingest(
    request: Request,
    settings: SettingsDep,
    x_cloudtap_agent: Annotated[str | None, Header()] = None,
    x_cloudtap_seq: Annotated[int | None, Header()] = None,
    x_cloudtap_token: Annotated[str | None, Header()] = None,
) -> IngestAck:
    """Store one batch exactly once (idempotent by agent and sequence number)."""
    if settings.api.agent_token and x_cloudtap_token != settings.api.agent_token:
        raise HTTPException(401, "missing or wrong X-Cloudtap-Token")
    body = await request.body()
    if len(body) > settings.api.max_batch_mib << 20:
        raise HTTPException(413, f"batch of {len(body)} bytes is over the {settings.api.max_batch_mib} MiB limit")
    ingestor: Ingestor = request.app.state.ingestor
    try:
        # decoding + the blocking insert run off the event loop: heartbeats, long-polls and queries go on
        result = await run_in_threadpool(ingestor.ingest_bytes, body, x_cloudtap_agent, x_cloudtap_seq)
    except IngestError as exc:
        raise HTTPException(400, str(exc)) from exc
    return IngestAck(stored=True, duplicate=result.duplicate, rows=result.rows)

"""Ingest backpressure: at ``ingest.max_pending_batches`` new batches get 429 + Retry-After, counted as throttled."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pytest
from test_ingest_coalescing import ROWS, Spy, counts, frame
from test_ingest_coalescing import records as records  # noqa: F401 - the module's fixture, shared

from access_helpers import grant
from cloudtap.server.api.app import create_app
from cloudtap.server.api.routes.ingest import _throttle
from cloudtap.server.coalesce import QueueDepth
from cloudtap.server.ingest import Ingestor
from cloudtap.server.settings import ServerSettings

FULL = 2  #: ingest.max_pending_batches of the test server


class Blocked(Spy):
    """The store's data inserts wait until ``release`` is set (a store that cannot keep up)."""

    def __init__(self, store: Any) -> None:
        super().__init__(store)
        self.release = threading.Event()

    def insert(self, tables: dict[str, pa.Table], key: Any = None) -> Any:
        assert self.release.wait(30), "the test never released the store"
        return super().insert(tables, key)


def app_with_limit(spy: Spy, tmp: Path) -> Any:
    auth = {"db_path": str(tmp / "access.sqlite"), "audit_log": str(tmp / "audit.jsonl")}
    ingest = {"coalesce_ms": 20, "wal_dir": str(tmp / "wal"), "max_pending_batches": FULL}
    app = create_app(ServerSettings.model_validate({"ingest": ingest, "auth": auth}), spy)  # type: ignore[arg-type]
    app.state.test_auth = grant(app, "admin")
    return app


def test_full_queue_answers_429_and_the_resend_is_stored_once(open_store, records, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    spy = Blocked(open_store())
    app = app_with_limit(spy, tmp_path)
    batches = {agent: frame(records, agent, 1) for agent in ("agent-0", "agent-1", "agent-2")}

    async def scenario() -> dict[str, Any]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=app.state.test_auth) as client:

            def post(agent: str) -> Any:
                return client.post("/api/v1/ingest", content=batches[agent],
                                   headers={"X-Cloudtap-Agent": agent, "X-Cloudtap-Seq": "1"})  # fmt: skip

            first = [asyncio.create_task(post(a)) for a in ("agent-0", "agent-1")]
            for _ in range(500):  # both accepted, their insert blocked in the store
                await asyncio.sleep(0.01)
                merger = getattr(app.state, "ingest_coalescer", None)
                if merger is not None and merger.depth().batches == FULL:
                    break
            throttled = await post("agent-2")
            resend = asyncio.create_task(post("agent-0"))  # waits already: joins its group, not throttled
            await asyncio.sleep(0.1)
            spy.release.set()
            answers = [await t for t in [*first, resend]]
            later = await post("agent-2")  # the agent resends after Retry-After: now there is room
            again = await post("agent-2")
            stats = (await client.get("/api/v1/ingest/stats")).json()
            metrics = (await client.get("/metrics")).text
        return {"throttled": throttled, "answers": answers, "later": later, "again": again, "stats": stats,
                "metrics": metrics}  # fmt: skip

    out = asyncio.run(scenario())
    throttled = out["throttled"]
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "1"
    assert "queue full" in throttled.json()["detail"]
    assert [r.status_code for r in out["answers"]] == [200, 200, 200]
    assert out["later"].status_code == 200 and not out["later"].json()["duplicate"]
    assert out["again"].status_code == 200 and out["again"].json()["duplicate"]
    assert counts(spy) == {"flows": 3 * ROWS, "edges_1s": 3 * ROWS, "logged": 3}  # nothing lost, nothing doubled
    stats = app.state.ingestor.stats
    assert stats.throttled == 1 and stats.rejected == 0 and stats.rejected_by_reason == {}
    assert out["stats"]["throttled_batches"] == 1 and out["stats"]["rejected_batches"] == 0
    assert "cloudtap_server_ingest_throttled_total 1.0" in out["metrics"]


class FakeMerger:
    def __init__(self, pending: int) -> None:
        self.pending = pending

    def depth(self) -> QueueDepth:
        return QueueDepth(self.pending, 0, 0)

    def holds(self, key: Any) -> bool:
        return False


@pytest.mark.parametrize(("pending", "limit", "retry_after"), [(4, 4, "1"), (5, 4, "2"), (8, 4, "5"), (400, 4, "5")])
def test_retry_after_grows_with_the_overload(pending: int, limit: int, retry_after: str) -> None:
    from fastapi import HTTPException

    ingestor = Ingestor(store=None)  # type: ignore[arg-type]
    with pytest.raises(HTTPException) as caught:
        _throttle(ingestor, FakeMerger(pending), limit, "a", 1)  # type: ignore[arg-type]
    assert caught.value.status_code == 429 and caught.value.headers == {"Retry-After": retry_after}
    _throttle(ingestor, FakeMerger(limit - 1), limit, "a", 1)  # type: ignore[arg-type]  # below: goes on
    _throttle(ingestor, FakeMerger(pending), 0, "a", 1)  # type: ignore[arg-type]  # 0: no limit
    assert ingestor.stats.throttled == 1

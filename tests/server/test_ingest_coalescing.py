"""Coalesced ingest: many agents' concurrent batches -> one insert per table, exactly once per (agent, seq)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pytest

from access_helpers import grant
from cloudtap.server.api.app import create_app
from cloudtap.server.coalesce import Coalescer
from cloudtap.server.ingest import Ingestor
from cloudtap.server.ingest_wal import GroupWal
from cloudtap.server.settings import ServerSettings
from cloudtap.ship.wire import encode_batch

AGENTS = 12
ROWS = 40


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pa.Table]:
    """Real metered records of a short synthetic cloud (flows and 1 s edges)."""
    from cloudtap.server.importer import import_tables
    from cloudtap.synth.scenario import resolve_scenario, with_overrides
    from cloudtap.synth.writer import write_pcap

    path = tmp_path_factory.mktemp("coalesce") / "s.pcap"
    write_pcap(with_overrides(resolve_scenario("small-cloud"), duration="10s"), path)
    tables = import_tables([path]).tables
    return {k: tables[k] for k in ("flows", "edges_1s")}


def frame(records: dict[str, pa.Table], agent: str, seq: int, bad_ip: bool = False) -> bytes:
    """One agent's batch: ROWS rows of each kind, re-labelled with the agent id."""
    parts = {}
    for kind, table in records.items():
        part = table.slice(seq % 5, ROWS)
        part = part.set_column(part.column_names.index("agent_id"), "agent_id", pa.array([agent] * ROWS))
        if bad_ip and kind == "flows":
            col = part.column_names.index("client_ip")
            part = part.set_column(col, "client_ip", pa.array(["10.0.0.300"] * ROWS))
        parts[kind] = part
    return encode_batch(agent, seq, parts)


class Spy:
    """Delegates to the store; counts data inserts and can fail them (or the member log rows)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.inserts: list[tuple[str, str]] = []
        self.fail_insert: Exception | None = None
        self.fail_log: Exception | None = None
        self.poison: str | None = None  #: fail any insert holding rows of this agent, like a store error

    def insert(self, tables: dict[str, pa.Table], key: Any = None) -> Any:
        if self.fail_insert is not None:
            raise self.fail_insert
        if self.poison is not None and any(self.poison in t.column("agent_id").to_pylist() for t in tables.values()):
            raise RuntimeError("Code: 1001. DB::Exception: std::out_of_range: vector (STD_EXCEPTION)")
        result = self.store.insert(tables, key)
        self.inserts += [(kind, key.agent_id if key else "") for kind in tables]
        return result

    def command(self, sql: str, parameters: Any = None) -> Any:
        if self.fail_log is not None and "ingest_log" in sql:
            raise self.fail_log
        return self.store.command(sql, parameters)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def app_for(spy: Spy, wal: Path, wait_ms: float = 300) -> Any:
    """The server, and an admin token (which may import batches of any agent) in ``app.state.test_auth``."""
    auth = {"db_path": str(wal.parent / "access.sqlite"), "audit_log": str(wal.parent / "audit.jsonl")}
    settings = ServerSettings.model_validate({"ingest": {"coalesce_ms": wait_ms, "wal_dir": str(wal)}, "auth": auth})
    app = create_app(settings, spy)  # type: ignore[arg-type]
    app.state.test_auth = grant(app, "admin")
    return app


async def post_all(app: Any, frames: list[tuple[str, int, bytes]]) -> list[httpx.Response]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=app.state.test_auth) as client:
        return await asyncio.gather(*(client.post("/api/v1/ingest", content=f, headers={
            "X-Cloudtap-Agent": a, "X-Cloudtap-Seq": str(s)}) for a, s, f in frames))  # fmt: skip


def counts(store: Any) -> dict[str, int]:
    store = getattr(store, "store", store)  # past the spy
    db = store.database
    return {
        "flows": int(store.command(f"SELECT count() FROM {db}.flow_log")),
        "edges_1s": int(store.command(f"SELECT count() FROM {db}.edge_1s")),
        "logged": int(store.command(f"SELECT count() FROM (SELECT DISTINCT agent_id, seq FROM {db}.ingest_log "
                                    "WHERE NOT startsWith(agent_id, '~group:'))")),  # fmt: skip
    }


def test_concurrent_batches_become_one_insert_and_replays_store_once(open_store, records, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    spy = Spy(open_store())
    app = app_for(spy, tmp_path / "wal")
    frames = [(f"agent-{i}", 7, frame(records, f"agent-{i}", 7)) for i in range(AGENTS)]
    answers = asyncio.run(post_all(app, frames))
    assert [r.status_code for r in answers] == [200] * AGENTS, answers[0].text
    assert all(not r.json()["duplicate"] and r.json()["rows"] == {"flows": ROWS, "edges_1s": ROWS} for r in answers)
    assert sorted(kind for kind, _ in spy.inserts) == ["edges_1s", "flows"]  # one block per table
    assert app.state.ingest_coalescer.groups_written == 1
    assert counts(spy) == {"flows": AGENTS * ROWS, "edges_1s": AGENTS * ROWS, "logged": AGENTS}
    assert list((tmp_path / "wal").rglob("*.wal")) == []  # done: the write-ahead file is gone

    # every batch resent twice at once, plus two new ones: the replays store nothing
    again = frames + frames + [(f"agent-{i}", 8, frame(records, f"agent-{i}", 8)) for i in range(2)]
    answers = asyncio.run(post_all(app, again))
    assert [r.status_code for r in answers] == [200] * len(again)
    assert [r.json()["duplicate"] for r in answers] == [True] * (2 * AGENTS) + [False, False]
    assert counts(spy) == {"flows": (AGENTS + 2) * ROWS, "edges_1s": (AGENTS + 2) * ROWS, "logged": AGENTS + 2}
    stats = app.state.ingestor.stats
    assert stats.batches == 3 * AGENTS + 2 and stats.duplicates == 2 * AGENTS


def test_failing_insert_fails_every_waiter_and_stores_nothing(open_store, records, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    spy = Spy(open_store())
    app = app_for(spy, tmp_path / "wal")
    frames = [(f"agent-{i}", 1, frame(records, f"agent-{i}", 1)) for i in range(AGENTS)]
    spy.fail_insert = ConnectionError("clickhouse is down")
    answers = asyncio.run(post_all(app, frames))
    assert [r.status_code for r in answers] == [503] * AGENTS
    assert "clickhouse is down" in answers[0].json()["detail"]
    assert counts(spy) == {"flows": 0, "edges_1s": 0, "logged": 0}
    assert len(list((tmp_path / "wal").rglob("*.wal"))) == 1  # the group waits, written ahead

    spy.fail_insert = None  # the store is back; agents resend (in another order): the same group is written
    answers = asyncio.run(post_all(app, frames[::-1]))
    assert [r.status_code for r in answers] == [200] * AGENTS
    assert counts(spy) == {"flows": AGENTS * ROWS, "edges_1s": AGENTS * ROWS, "logged": AGENTS}
    assert list((tmp_path / "wal").rglob("*.wal")) == []


def test_bad_data_refuses_only_its_batch(open_store, records, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    spy = Spy(open_store())
    app = app_for(spy, tmp_path / "wal")
    frames = [(f"agent-{i}", 3, frame(records, f"agent-{i}", 3, bad_ip=i == 4)) for i in range(AGENTS)]
    torn = bytearray(frames[6][2])
    torn[-10] ^= 0xFF  # a flipped bit in a section: found when the writer decodes it
    frames[6] = (frames[6][0], 3, bytes(torn))
    frames[7] = (frames[7][0], 99, frames[7][2])  # sequence header does not match the frame's
    answers = asyncio.run(post_all(app, frames))
    assert [r.status_code for r in answers] == [200] * 4 + [400] + [200] + [400, 400] + [200] * (AGENTS - 8)
    assert "flows" in answers[4].json()["detail"] and "CRC" in answers[6].json()["detail"]
    assert "sequence header 99" in answers[7].json()["detail"]
    good = AGENTS - 3
    assert counts(spy) == {"flows": good * ROWS, "edges_1s": good * ROWS, "logged": good}
    assert app.state.ingestor.stats.rejected == 3


def test_crash_between_data_and_log_neither_loses_nor_doubles(open_store, records, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    spy = Spy(open_store())
    app = app_for(spy, tmp_path / "wal")
    frames = [(f"agent-{i}", 5, frame(records, f"agent-{i}", 5)) for i in range(AGENTS)]
    spy.fail_log = OSError("power cut")  # the data blocks land, the member log rows do not
    answers = asyncio.run(post_all(app, frames))
    assert [r.status_code for r in answers] == [503] * AGENTS
    assert counts(spy)["flows"] == AGENTS * ROWS and counts(spy)["logged"] == 0

    # a new server process on the same data: the write-ahead group is replayed before anything else
    spy.fail_log = None
    app2 = app_for(spy, tmp_path / "wal")
    half = frames[: AGENTS // 2]
    answers = asyncio.run(post_all(app2, half))
    assert [r.status_code for r in answers] == [200] * len(half)
    assert counts(spy) == {"flows": AGENTS * ROWS, "edges_1s": AGENTS * ROWS, "logged": AGENTS}
    answers = asyncio.run(post_all(app2, frames[AGENTS // 2 :]))
    assert all(r.status_code == 200 and r.json()["duplicate"] for r in answers)
    assert counts(spy) == {"flows": AGENTS * ROWS, "edges_1s": AGENTS * ROWS, "logged": AGENTS}


def test_group_replay_is_idempotent_at_the_store(open_store, records, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Replaying the same write-ahead group twice (crash after the log, file not yet removed) adds nothing."""
    store = open_store()
    ingestor = Ingestor(store)
    wal = GroupWal(tmp_path / "wal")
    batches = [ingestor.prepare_bytes(frame(records, f"agent-{i}", 9)) for i in range(3)]

    async def run(todo: list) -> None:  # type: ignore[type-arg]
        merger = Coalescer(ingestor, 0.05, wal=wal)
        await asyncio.gather(*(merger.submit(b) for b in todo))
        merger.close()

    asyncio.run(run(batches))
    assert counts(store) == {"flows": 3 * ROWS, "edges_1s": 3 * ROWS, "logged": 3}
    from cloudtap.server.ingest_group import group_digest
    from cloudtap.server.ingest_wal import WalRecord

    digest = group_digest([b.key for b in batches])
    wal.write(WalRecord(digest, [(b.key.agent_id, b.key.seq) for b in batches], [b.frame for b in batches]))
    asyncio.run(run([ingestor.prepare_bytes(frame(records, "agent-new", 1))]))  # the file is replayed first
    assert counts(store) == {"flows": 4 * ROWS, "edges_1s": 4 * ROWS, "logged": 4}
    assert list((tmp_path / "wal").glob("*.wal")) == []


# --- a bad batch never blocks the others -----------------------------------------------------------------

POISON = "agent-poison"


def with_poison(
    records: dict[str, pa.Table], seq: int, poison: bytes | None = None
) -> list[tuple[str, int, bytes]]:
    """AGENTS good batches and one poison (``poison`` frame, else a normal batch of agent-poison), mixed in."""
    frames = [(f"agent-{i}", seq, frame(records, f"agent-{i}", seq)) for i in range(AGENTS)]
    frames.insert(AGENTS // 2, (POISON, seq, poison if poison is not None else frame(records, POISON, seq)))
    return frames


def test_a_batch_the_store_fails_on_is_refused_alone(open_store, records, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """An insert error that is not a known data error (it used to fail the group: 503 for all, forever)."""
    spy = Spy(open_store())
    spy.poison = POISON
    app = app_for(spy, tmp_path / "wal")
    frames = with_poison(records, 4)
    answers = asyncio.run(post_all(app, frames))
    codes = {a: r.status_code for (a, _, _), r in zip(frames, answers, strict=True)}
    assert codes == {a: 400 if a == POISON else 200 for a, _, _ in frames}
    detail = answers[AGENTS // 2].json()["detail"]
    assert "refused by the store: RuntimeError" in detail and "STD_EXCEPTION" in detail
    assert counts(spy) == {"flows": AGENTS * ROWS, "edges_1s": AGENTS * ROWS, "logged": AGENTS}
    stats = app.state.ingestor.stats
    assert stats.rejected == 1 and stats.rejected_by_reason == {"refused by store": 1}
    assert list((tmp_path / "wal").rglob("*.wal")) == []  # the group is done, nothing waits

    # everyone resends: the good ones are duplicates, the poison is refused again, nothing is stored twice
    answers = asyncio.run(post_all(app, frames))
    assert [r.status_code for r in answers] == [400 if a == POISON else 200 for a, _, _ in frames]
    assert all(r.json()["duplicate"] for (a, _, _), r in zip(frames, answers, strict=True) if a != POISON)
    assert counts(spy) == {"flows": AGENTS * ROWS, "edges_1s": AGENTS * ROWS, "logged": AGENTS}


def test_a_store_outage_is_not_blamed_on_a_batch(open_store, records, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Errors that say the store is unavailable fail the whole group (503), with nothing refused."""
    spy = Spy(open_store())
    app = app_for(spy, tmp_path / "wal")
    spy.fail_insert = RuntimeError(
        "Code: 241. DB::Exception: Memory limit (total) exceeded (MEMORY_LIMIT_EXCEEDED)"
    )
    frames = with_poison(records, 6)
    answers = asyncio.run(post_all(app, frames))
    assert [r.status_code for r in answers] == [503] * len(frames)
    assert app.state.ingestor.stats.rejected == 0
    spy.fail_insert = None
    answers = asyncio.run(post_all(app, frames))
    assert [r.status_code for r in answers] == [200] * len(frames)
    assert counts(spy)["logged"] == AGENTS + 1


def test_a_batch_that_fails_tagging_is_stored_untagged_alone(open_store, records, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Tagging the merged block fails because of one batch: the others keep their cloud ids."""

    class Tagger:
        def tag_tables(self, tables: dict[str, pa.Table]) -> dict[str, pa.Table]:
            out = {}
            for kind, table in tables.items():
                if POISON in table.column("agent_id").to_pylist():
                    raise KeyError("an address the inventory chokes on")
                ids = pa.array([7] * table.num_rows, pa.uint32())
                out[kind] = table.append_column("client_project_id", ids)
            return out

    spy = Spy(open_store())
    app = app_for(spy, tmp_path / "wal")
    app.state.ingestor.tagger = Tagger()
    answers = asyncio.run(post_all(app, with_poison(records, 2)))
    assert [r.status_code for r in answers] == [200] * (AGENTS + 1)
    db = spy.store.database
    by_agent = spy.store.query_arrow(
        f"SELECT agent_id, groupUniqArray(client_project_id) AS ids FROM {db}.flow_log GROUP BY agent_id"
    ).to_pylist()
    assert {r["agent_id"]: r["ids"] for r in by_agent} == {
        **{f"agent-{i}": [7] for i in range(AGENTS)},
        POISON: [0],
    }
    stats = app.state.ingestor.stats
    assert stats.tag_errors == 2 and f"batch {POISON}:2 stored untagged" in stats.last_error  # flows, edges
    assert stats.rejected == 0 and counts(spy)["logged"] == AGENTS + 1


def test_a_decompression_bomb_in_a_group_is_refused_alone(open_store, records, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Its header passes (the event loop reads only that); the writer refuses it before inflating it."""
    junk = pa.Array.from_buffers(
        pa.binary(),
        1,
        [None, pa.py_buffer(np.array([0, 64 << 20], np.int32)), pa.py_buffer(np.zeros(64 << 20, np.uint8))],
    )
    bomb = encode_batch(POISON, 8, {"flows": pa.table({"flow_id": pa.array([1], pa.uint64()), "junk": junk})})
    spy = Spy(open_store())
    app = app_for(spy, tmp_path / "wal")
    frames = with_poison(records, 8, bomb)
    answers = asyncio.run(post_all(app, frames))
    assert [r.status_code for r in answers] == [400 if a == POISON else 200 for a, _, _ in frames]
    assert "would decode to 64 MiB" in answers[AGENTS // 2].json()["detail"]
    assert counts(spy) == {"flows": AGENTS * ROWS, "edges_1s": AGENTS * ROWS, "logged": AGENTS}
    assert app.state.ingestor.stats.rejected_by_reason == {"too large": 1}


def test_the_plain_path_refuses_a_batch_the_store_keeps_failing_on(open_store, records, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """``coalesce_ms: 0``: tried twice, the store answering queries meanwhile: a 400, not an endless 500."""
    spy = Spy(open_store())
    spy.poison = POISON
    app = app_for(spy, tmp_path / "wal", wait_ms=0)
    frames = [(POISON, 1, frame(records, POISON, 1)), ("agent-1", 1, frame(records, "agent-1", 1))]
    answers = asyncio.run(post_all(app, frames))
    assert [r.status_code for r in answers] == [400, 200]
    assert "refused by the store: RuntimeError" in answers[0].json()["detail"]
    assert app.state.ingestor.stats.rejected_by_reason == {"refused by store": 1}
    assert counts(spy) == {"flows": ROWS, "edges_1s": ROWS, "logged": 1}

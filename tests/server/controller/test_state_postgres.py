"""The controller's state in a real PostgreSQL (Debian's, started by the tests): two :class:`PostgresDB` on one
database stand for two server processes; what one writes, the other's in-memory views follow."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from cloudtap.server.controller.commands import CommandQueue, command_queue
from cloudtap.server.controller.db import ControllerDB, open_controller_db
from cloudtap.server.controller.groups import Groups
from cloudtap.server.controller.policy import Policies, Policy
from cloudtap.server.controller.registry import Registry
from postgres_cluster import eventually, postgres_cluster, postgres_url  # noqa: F401 - fixtures

pytest.importorskip("psycopg")
from cloudtap.server.controller.commands_shared import SharedCommandQueue  # noqa: E402
from cloudtap.server.controller.db_postgres import PostgresDB, describe  # noqa: E402


@pytest.fixture
def pair(postgres_url: str) -> Iterator[tuple[PostgresDB, PostgresDB]]:  # noqa: F811
    a, b = open_controller_db(postgres_url), open_controller_db(postgres_url)
    assert isinstance(a, PostgresDB) and isinstance(b, PostgresDB)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def listening(*dbs: PostgresDB) -> None:
    for db in dbs:
        assert db._listener is not None and db._listener.connected.wait(5)


def test_the_schema_is_created_once_and_opening_again_keeps_the_rows(postgres_url: str) -> None:  # noqa: F811
    db = PostgresDB(postgres_url)
    db.execute("INSERT INTO groups (name, updated_at) VALUES (?, ?)", ("kept", 1.5))
    again = PostgresDB(postgres_url)  # a second process starting: idempotent, under the advisory lock
    assert again.rows("SELECT name, version, updated_at FROM groups") == [{"name": "kept", "version": 0,
                                                                          "updated_at": 1.5}]  # fmt: skip
    columns = {r["column_name"]: r["data_type"] for r in again.rows(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'agents'")}  # fmt: skip
    assert columns["last_seen"] == "double precision" and "control_url" in columns  # epoch seconds keep their ms
    with again.transaction() as tx:
        tx.executemany("UPDATE groups SET description = ? WHERE name = ?", [("50% off?", "kept")])
    assert again.rows("SELECT description FROM groups WHERE name = ?", ("kept",))[0]["description"] == "50% off?"
    db.close()
    again.close()


def test_the_url_password_never_shows() -> None:
    url = "postgresql://ctl:s3cr3t-pw@db.example:5433/cloudtap?sslmode=require"
    assert describe(url) == "postgresql://ctl@db.example:5433/cloudtap"
    with pytest.raises(ConnectionError) as err:
        PostgresDB("postgresql://ctl:s3cr3t-pw@127.0.0.1:1/nothing?connect_timeout=2")
    assert "s3cr3t-pw" not in str(err.value) and "127.0.0.1:1/nothing" in str(err.value)


def test_sqlite_stays_the_default_with_its_in_memory_queue(tmp_path: Any) -> None:
    db = open_controller_db(tmp_path / "ctl.sqlite")
    assert isinstance(db, ControllerDB) and not db.shared
    assert isinstance(command_queue(db), CommandQueue)
    db.close()


def test_registrations_groups_and_policies_written_by_one_process_reach_the_other(
    pair: tuple[PostgresDB, PostgresDB],
) -> None:
    a, b = pair
    reg_a, reg_b = Registry(a), Registry(b)
    groups_a, groups_b = Groups(a), Groups(b)
    pol_a, pol_b = Policies(a), Policies(b)
    listening(a, b)
    rec = reg_a.register("agent-hv1", "hv1", "m-1", group="edge")
    assert eventually(lambda: reg_b.find("agent-hv1")) == rec
    reg_b.update(rec.id, config_version=7)
    assert eventually(lambda: reg_a.get(rec.id).config_version == 7)
    reg_a.seen(rec.id, rec.last_seen + 30)
    reg_a.flush()
    assert eventually(lambda: reg_b.get(rec.id).last_seen == rec.last_seen + 30)

    group, _ = groups_a.set_overlay("edge", {"limits": {"max_pps": 1000}}, "edge hosts")
    assert group.version == 1
    assert eventually(lambda: groups_b.get("edge").version == 1)
    again, _ = groups_b.set_overlay("edge", {"limits": {"max_pps": 2000}})  # counted in the database
    assert again.version == 2 and again.description == "edge hosts"
    assert eventually(lambda: groups_a.get("edge").overlay == {"limits": {"max_pps": 2000}})
    assert groups_a.ensure("edge").version == 2  # ensure never resets another process's group

    generation = pol_b.generation
    pol_a.put(Policy.model_validate({"name": "shop", "select": {"project": "shop"}}))
    assert eventually(lambda: pol_b.get("shop") is not None) and pol_b.generation > generation
    assert pol_b.delete("shop")
    assert eventually(lambda: pol_a.get("shop") is None)
    reg_b.remove(rec.id)
    assert eventually(lambda: reg_a.find(rec.id) is None)


def test_a_command_queued_by_one_process_wakes_the_long_poll_held_by_the_other(
    pair: tuple[PostgresDB, PostgresDB],
) -> None:
    a, b = pair
    qa = SharedCommandQueue(a, poll_s=30.0)  # no polling: only the notification can wake it in time
    qb = command_queue(b)
    assert isinstance(qb, SharedCommandQueue)
    listening(a, b)

    async def scenario() -> tuple[list[Any], float]:
        started = time.monotonic()
        waiting = asyncio.create_task(qa.wait("ag-1", 10.0))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        cmd = await asyncio.to_thread(qb.put, "ag-1", "stop")
        got = await waiting
        assert [c.id for c in got] == [cmd.id]
        return got, time.monotonic() - started

    got, took = asyncio.run(scenario())
    assert got[0].action == "stop" and got[0].delivered_at is not None and took < 2.0
    assert qa.take("ag-1") == [] and qb.take("ag-1") == []  # delivered once
    done = qa.done(got[0].id, True, "stopped")
    assert done is not None and qb.get(got[0].id).ok is True  # type: ignore[union-attr]
    assert [c.id for c in qb.snapshot()] == [got[0].id]
    with pytest.raises(ValueError):
        qb.put("ag-1", "reboot")

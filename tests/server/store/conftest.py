"""Store fixtures: ONE embedded chDB data path per test process, one fresh database per test.

chDB allows a single data path per process (and a single process per path). Every store test opens
its stores on ``chdb_dsn`` (session-scoped) in a database of its own, and closes them when it ends,
so nothing holds the path between tests and other packages can open their own path afterwards.
Reuse the pattern: compute the path as ``tmp_path_factory.getbasetemp() / "chdb"`` to share it.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cloudtap.server.store.clickhouse import ClickHouseStore

_COUNTER = itertools.count()
StoreFactory = Callable[..., ClickHouseStore]


@pytest.fixture(scope="session")
def chdb_dsn(tmp_path_factory: pytest.TempPathFactory) -> str:
    """``chdb://`` DSN of the test process's single chDB data path."""
    return f"chdb://{tmp_path_factory.getbasetemp() / 'chdb'}"


@pytest.fixture
def open_store(chdb_dsn: str, request: pytest.FixtureRequest) -> Iterator[StoreFactory]:
    """Factory of stores in a database unique to this test (``open_store(migrate=True, **kwargs)``)."""
    opened: list[ClickHouseStore] = []
    base = "t_" + re.sub(r"\W+", "_", request.node.name)[:40]
    database = f"{base}_{next(_COUNTER)}"

    def factory(migrate: bool = True, **kwargs: object) -> ClickHouseStore:
        store = ClickHouseStore(chdb_dsn, database=database, **kwargs)  # type: ignore[arg-type]
        opened.append(store)
        if migrate:
            store.migrate()
        return store

    yield factory
    for store in opened:
        store.close()


@pytest.fixture
def store(open_store: StoreFactory) -> ClickHouseStore:
    """A migrated store with the default retention, in a fresh database."""
    return open_store()


@pytest.fixture(scope="session")
def pcaps(shared_pcaps: Path) -> Path:
    """The shared real captures (skips when absent)."""
    return shared_pcaps

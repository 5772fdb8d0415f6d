"""Shared fixtures: where the shared captures live; the test process's one embedded chDB path.

chDB allows a single data path per process (and a single process per path). Every test that needs a
store opens it on ``chdb_dsn`` (session-scoped) in a database of its own (``open_store``), and closes it
when it ends, so nothing holds the path between tests.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_PCAPS = REPO.parent / "shared" / "pcaps"
_COUNTER = itertools.count()


@pytest.fixture(scope="session")
def shared_pcaps() -> Path:
    """The shared corpus of real captures; skips the test when it is absent."""
    if not (SHARED_PCAPS / "MANIFEST.csv").is_file():
        pytest.skip("../shared/pcaps is not present")
    return SHARED_PCAPS


@pytest.fixture(scope="session")
def chdb_dsn(tmp_path_factory: pytest.TempPathFactory) -> str:
    """``chdb://`` DSN of the test process's single chDB data path."""
    return f"chdb://{tmp_path_factory.getbasetemp() / 'chdb'}"


@pytest.fixture
def open_store(chdb_dsn: str, request: pytest.FixtureRequest) -> Iterator[Callable[..., Any]]:
    """Factory of stores in a database unique to this test (``open_store(migrate=True, **kwargs)``)."""
    from cloudtap.server.store.clickhouse import ClickHouseStore

    opened: list[ClickHouseStore] = []
    base = "t_" + re.sub(r"\W+", "_", request.node.name)[:40]
    database = f"{base}_{next(_COUNTER)}"

    def factory(migrate: bool = True, **kwargs: object) -> Any:
        store = ClickHouseStore(chdb_dsn, database=database, **kwargs)  # type: ignore[arg-type]
        opened.append(store)
        if migrate:
            store.migrate()
        return store

    yield factory
    for store in opened:
        store.close()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Browser tests last: Playwright's sync API keeps an event loop running in this thread for as long as
    its (session-scoped) browser lives, and ``asyncio.run`` refuses to start inside it."""
    items.sort(key=lambda item: "tests/console/" in item.nodeid.replace("\\", "/"))


def _own_cgroup() -> str:
    try:
        return Path("/proc/self/cgroup").read_text()
    except OSError:
        return ""


@pytest.fixture(autouse=True)
def _stays_in_its_cgroup() -> Iterator[None]:
    """An Agent run inside pytest with ``limits.use_cgroup`` on moves the whole test process into the agent's
    cgroup, whose memory limit then kills the run much later: fail the test that did it instead."""
    before = _own_cgroup()
    yield
    after = _own_cgroup()
    if after != before:
        pytest.fail(f"this test moved the test process into another cgroup ({after.strip()!r}); "
                    "run in-process agents with limits.use_cgroup false (tests/agent/agent_replay.py)")

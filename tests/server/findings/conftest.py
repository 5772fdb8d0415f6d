"""Findings test fixtures: the planted and quiet clouds in embedded stores, each run once through the engine."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from findingsdata import Dataset, load
from findingsrun import Ran, run_engine


@pytest.fixture(scope="session")
def planted_data(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    return load(tmp_path_factory.getbasetemp() / "findings-planted", "planted", "30m", True)


@pytest.fixture(scope="session")
def quiet_data(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    return load(tmp_path_factory.getbasetemp() / "findings-quiet", "quiet", "3h", False)


@pytest.fixture(scope="session")
def planted(chdb_dsn: str, planted_data: Dataset) -> Iterator[Ran]:
    """The planted cloud after one engine pass over its 30 minutes (with the isolation rule)."""
    ran = run_engine(chdb_dsn, planted_data, "findings_planted", 30)
    try:
        yield ran
    finally:
        ran.store.close()


@pytest.fixture()
def fresh_planted(chdb_dsn: str, planted_data: Dataset, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A store holding the planted cloud, nothing run yet (a database of this test's own)."""
    from cloudtap.server.store.clickhouse import ClickHouseStore

    database = "findings_" + "".join(c if c.isalnum() else "_" for c in request.node.name)[:40]
    store = ClickHouseStore(chdb_dsn, database=database)
    store.command(f"DROP DATABASE IF EXISTS `{database}`")
    store.close()
    store = ClickHouseStore(chdb_dsn, database=database)
    store.migrate()
    store.insert(planted_data.tables, planted_data.key)
    try:
        yield store
    finally:
        store.close()

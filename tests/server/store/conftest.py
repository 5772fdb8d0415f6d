"""Store fixtures: a migrated store per test (``chdb_dsn`` and ``open_store`` live in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from cloudtap.server.store.clickhouse import ClickHouseStore

StoreFactory = Callable[..., ClickHouseStore]


@pytest.fixture
def store(open_store: StoreFactory) -> ClickHouseStore:
    """A migrated store with the default retention, in a fresh database."""
    return open_store()


@pytest.fixture(scope="session")
def pcaps(shared_pcaps: Path) -> Path:
    """The shared real captures (skips when absent)."""
    return shared_pcaps

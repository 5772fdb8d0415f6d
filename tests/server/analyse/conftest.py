"""The analysis dataset in an embedded store, opened per test module on the process's chDB path."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from analysedata import AnalyseData, DictNames, load, open_store


@pytest.fixture(scope="session")
def adata(tmp_path_factory: pytest.TempPathFactory) -> AnalyseData:
    """The metered synthetic cloud (built once per session)."""
    return load(tmp_path_factory.getbasetemp() / "analyse-data")


@pytest.fixture(scope="module")
def astore(chdb_dsn: str, adata: AnalyseData) -> Iterator[Any]:
    """A store holding :func:`adata`."""
    store = open_store(chdb_dsn, adata)
    try:
        yield store
    finally:
        store.close()


@pytest.fixture(scope="session")
def names(adata: AnalyseData) -> DictNames:
    """Names of the dataset's projects, hosts, VMs and subnets."""
    return DictNames({k: v for k, v in adata.inventory.items() if k != "ip"})

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


@pytest.fixture(scope="session")
def rdata() -> Any:
    """The request dataset (requestdata.py): shop -> db slowing down at 10:30."""
    from requestdata import build

    return build()


@pytest.fixture(scope="module")
def rstore(chdb_dsn: str, rdata: Any) -> Iterator[Any]:
    """A store holding :func:`rdata` as the agents shipped it."""
    from requestdata import open_request_store

    store = open_request_store(chdb_dsn, rdata)
    try:
        yield store
    finally:
        store.close()

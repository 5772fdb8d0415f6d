"""An embedded store with the query test dataset, opened per test module and closed after it.

It lives on the test process's single chDB path (``<basetemp>/chdb``, as in tests/server/store) in a
database of its own; nothing holds the path between modules, so other tests may open other paths.
The dataset is one batch with a fixed key: opening it again does not store it twice.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from querydata import Dataset, make_dataset, open_test_store

DATABASE = "query_tests"


@pytest.fixture(scope="session")
def dataset() -> Dataset:
    """The rows inserted into :func:`store`."""
    return make_dataset()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, dataset: Dataset) -> Iterator[Any]:
    """A chDB store holding ``dataset``."""
    s = open_test_store(str(tmp_path_factory.getbasetemp() / "chdb"), dataset, DATABASE)
    try:
        yield s
    finally:
        s.close()

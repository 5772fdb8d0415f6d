"""Fixtures of the two-tenant store (tenantdata): the ingested tables, the inventory file, the store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tenantdata import INVENTORY_CSV, KEY, TenantData, make_tenant_data


@pytest.fixture(scope="session")
def tenant_data() -> TenantData:
    """The ingested tables (built once)."""
    return make_tenant_data()


@pytest.fixture(scope="session")
def tenant_inventory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The static inventory file of the two projects."""
    path = tmp_path_factory.mktemp("tenants") / "inventory.csv"
    path.write_text(INVENTORY_CSV)
    return path


@pytest.fixture(scope="module")
def tenant_store(chdb_dsn: str, tenant_data: TenantData, tenant_inventory: Path) -> Iterator[Any]:
    """A store holding the inventory and the tagged tables (ingested once: the batch key deduplicates)."""
    from cloudtap.inventory.connectors.static import load_static
    from cloudtap.inventory.store import InventoryStore
    from cloudtap.inventory.tagging import Tagger
    from cloudtap.server.ingest import Ingestor
    from cloudtap.server.store.clickhouse import open_store

    store = open_store(chdb_dsn, "tenant_tests")
    try:
        inventory = InventoryStore(store, backdate_first_sync=True)
        inventory.apply(load_static(tenant_inventory))
        ingestor = Ingestor(store, tagger=Tagger(inventory))
        ingestor.ingest_tables(tenant_data.kinds(), KEY)
        assert ingestor.stats.tag_errors == 0
        yield store
    finally:
        store.close()

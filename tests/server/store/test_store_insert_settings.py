"""A store's ``insert_settings`` are the settings of its data inserts (benchmarks try others through them)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from store_batches import MULTI_DAY, batch_of, metered

from cloudtap.server.store.base import BatchKey
from cloudtap.server.store.clickhouse import INSERT_SETTINGS, ClickHouseStore, not_null_fields


def test_insert_settings_start_as_the_module_defaults_and_reach_the_insert(
    store: ClickHouseStore, pcaps: Path
) -> None:
    assert store.insert_settings == INSERT_SETTINGS and store.insert_settings is not INSERT_SETTINGS
    flows = batch_of(metered(pcaps, MULTI_DAY), "hv-1")["flows"]
    # flow_log is partitioned by day and the capture spans several days: one partition per insert is refused
    store.insert_settings = {**INSERT_SETTINGS, "max_partitions_per_insert_block": 1,
                             "throw_on_max_partitions_per_insert_block": 1}  # fmt: skip
    with pytest.raises(Exception, match="TOO_MANY_PARTS"):  # chDB's error, passed through as is
        store.insert({"flows": flows}, BatchKey("hv-1", 1))
    assert "max_partitions_per_insert_block" not in INSERT_SETTINGS  # the module's defaults are untouched
    store.insert_settings = dict(INSERT_SETTINGS)
    store.insert({"flows": flows}, BatchKey("hv-1", 1))
    stored = store.query_arrow("SELECT count() AS n FROM flow_log")["n"][0].as_py()
    assert stored == flows.num_rows


def test_null_free_columns_are_declared_not_null_without_a_copy() -> None:
    table = pa.table({"a": pa.array([1, 2], pa.uint64()), "b": pa.array([1, None], pa.uint32())})
    declared = not_null_fields(table)
    assert [f.nullable for f in declared.schema] == [False, True]
    assert declared.column(0).chunk(0).buffers()[1].address == table.column(0).chunk(0).buffers()[1].address
    assert declared.equals(table.cast(declared.schema)) and not_null_fields(declared) is declared


def test_an_optional_column_with_nulls_is_still_stored_as_its_default(
    store: ClickHouseStore, pcaps: Path
) -> None:
    flows = batch_of(metered(pcaps, MULTI_DAY), "hv-1")["flows"]
    n = flows.num_rows
    with_nulls = pa.array([None if i % 2 else 7 for i in range(n)], pa.uint32())
    flows = flows.set_column(flows.schema.get_field_index("vlan"), "vlan", pa.array([3] * n, pa.uint16()))
    flows = flows.append_column("client_vm_id", with_nulls)
    store.insert({"flows": flows}, BatchKey("hv-1", 1))
    got = store.query_arrow(
        "SELECT client_vm_id AS vm, vlan, count() AS n FROM flow_log GROUP BY vm, vlan ORDER BY vm"
    )
    assert got.to_pylist() == [{"vm": 0, "vlan": 3, "n": n // 2}, {"vm": 7, "vlan": 3, "n": n - n // 2}]

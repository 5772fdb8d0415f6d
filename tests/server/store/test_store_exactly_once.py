"""Exactly-once ingest: replays, a crash between data and log, and schema validation on insert."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from store_batches import EXAMPLE, MULTI_DAY, batch_of, metered

from cloudtap.server.store.base import BatchKey
from cloudtap.server.store.clickhouse import ClickHouseStore, prepare_table

TABLES = ("flow_log", "edge_1s", "edge_1m", "endpoint_1s", "endpoint_1m", "edge_1h", "endpoint_1h")


def _counts(store: ClickHouseStore) -> dict[str, tuple[int | None, float]]:
    """Per table: rows (raw tables only: rollup rows merge) and total bytes (endpoints: bytes out)."""
    out: dict[str, tuple[int | None, float]] = {}
    for table in TABLES:
        rollup = table.startswith("endpoint") or table.endswith("_1h")
        col = "bytes_out" if table.startswith("endpoint") else "bytes_c2s"
        row = store.query_arrow(f"SELECT count() AS n, sum({col}) AS b FROM {table}").to_pylist()[0]
        out[table] = (None if rollup else row["n"], row["b"])
    return out


@pytest.fixture
def batch(pcaps: Path) -> dict[str, pa.Table]:
    """One agent batch with all three kinds."""
    return batch_of(metered(pcaps, MULTI_DAY), "hv-1")


def test_replay_is_a_duplicate_and_adds_nothing(store: ClickHouseStore, batch: dict[str, pa.Table]) -> None:
    key = BatchKey("hv-1", 7)
    first = store.insert(batch, key)
    once = _counts(store)
    again = store.insert(batch, key)
    assert not first.duplicate and again.duplicate
    assert again.rows == first.rows == {k: t.num_rows for k, t in batch.items()}
    assert _counts(store) == once
    assert once["flow_log"][0] == batch["flows"].num_rows
    log = store.query_arrow("SELECT agent_id, seq, kinds, rows FROM ingest_log").to_pylist()
    assert log == [
        {"agent_id": "hv-1", "seq": 7, "kinds": list(batch), "rows": [t.num_rows for t in batch.values()]}
    ]


def test_another_seq_with_the_same_rows_is_stored_again(
    store: ClickHouseStore, batch: dict[str, pa.Table]
) -> None:
    store.insert(batch, BatchKey("hv-1", 1))
    store.insert(batch, BatchKey("hv-1", 2))
    n = store.query_arrow("SELECT count() AS n FROM flow_log")["n"][0].as_py()
    assert n == 2 * batch["flows"].num_rows


def test_crash_before_the_log_heals_on_replay(
    store: ClickHouseStore, batch: dict[str, pa.Table], monkeypatch: pytest.MonkeyPatch
) -> None:
    key = BatchKey("hv-9", 3)

    def crash(*_: object) -> None:
        raise RuntimeError("killed between the data blocks and the log row")

    monkeypatch.setattr(store, "_log_batch", crash)
    with pytest.raises(RuntimeError, match="killed"):
        store.insert(batch, key)
    monkeypatch.undo()
    assert not store.is_logged(key)
    partial = _counts(store)
    assert partial["flow_log"][0] == batch["flows"].num_rows  # the data made it, the log did not
    result = store.insert(batch, key)  # the agent replays the whole batch
    assert not result.duplicate
    assert _counts(store) == partial  # nothing doubled, views included
    assert store.is_logged(key)
    assert store.insert(batch, key).duplicate


def test_crash_after_some_kinds_heals_on_replay(
    store: ClickHouseStore, pcaps: Path, batch: dict[str, pa.Table]
) -> None:
    key = BatchKey("hv-9", 4)
    store.insert(batch_of(metered(pcaps, EXAMPLE), "hv-2"), BatchKey("hv-2", 1))
    before = _counts(store)
    store._insert_block("flows", prepare_table("flows", batch["flows"]), key)  # only flows landed
    store._insert_block("edges_1s", prepare_table("edges_1s", batch["edges_1s"]), key)
    store.insert(batch, key)
    after = _counts(store)
    assert after["flow_log"][0] == before["flow_log"][0] + batch["flows"].num_rows
    assert after["edge_1s"][0] == before["edge_1s"][0] + batch["edges_1s"].num_rows
    assert after["edge_1m"][0] == before["edge_1m"][0] + batch["edges_60s"].num_rows
    want_out = (
        before["endpoint_1s"][1]
        + sum(batch["edges_1s"]["bytes_c2s"].to_pylist())
        + sum(batch["edges_1s"]["bytes_s2c"].to_pylist())
    )
    assert after["endpoint_1s"][1] == want_out  # each edge byte is some endpoint's bytes_out, once


def test_without_a_key_nothing_is_logged(store: ClickHouseStore, batch: dict[str, pa.Table]) -> None:
    result = store.insert({"flows": batch["flows"]})
    assert result.rows == {"flows": batch["flows"].num_rows} and not result.duplicate
    assert store.query_arrow("SELECT count() AS n FROM ingest_log")["n"][0].as_py() == 0


# -- validation -----------------------------------------------------------------------------------
def test_missing_required_column_is_refused(store: ClickHouseStore, batch: dict[str, pa.Table]) -> None:
    with pytest.raises(ValueError, match=r"flows: missing required column 'bytes_c2s'"):
        store.insert({"flows": batch["flows"].drop_columns(["bytes_c2s"])}, BatchKey("x", 1))
    assert not store.is_logged(BatchKey("x", 1))


def test_wrong_type_is_refused_before_anything_is_stored(
    store: ClickHouseStore, batch: dict[str, pa.Table]
) -> None:
    edges = batch["edges_1s"]
    bad = edges.set_column(
        edges.schema.get_field_index("bytes_c2s"), "bytes_c2s", edges["bytes_c2s"].cast(pa.string())
    )
    with pytest.raises(ValueError, match=r"edges_1s: column 'bytes_c2s' \(UInt64\) must be an integer"):
        store.insert({"flows": batch["flows"], "edges_1s": bad}, BatchKey("x", 2))
    assert (
        store.query_arrow("SELECT count() AS n FROM flow_log")["n"][0].as_py() == 0
    )  # flows not stored either


@pytest.mark.parametrize(
    ("column", "values", "message"),
    [
        ("client_ip", pa.array([1], pa.int64()), "must be text"),
        ("first_ns", pa.array(["2020"], pa.string()), "'first_ns' .*must be an integer"),
        ("server_port", pa.array([70000], pa.int64()), "server_port"),
        ("packets_c2s", pa.array([None], pa.uint64()), "null value"),
    ],
)
def test_bad_columns_name_the_kind_and_column(
    store: ClickHouseStore, batch: dict[str, pa.Table], column: str, values: pa.Array, message: str
) -> None:
    flows = batch["flows"].slice(0, 1)
    flows = flows.set_column(flows.schema.get_field_index(column), column, values)
    with pytest.raises(ValueError, match=message):
        store.insert({"flows": flows})


def test_unparsable_address_is_refused(store: ClickHouseStore, batch: dict[str, pa.Table]) -> None:
    flows = batch["flows"].slice(0, 2)
    flows = flows.set_column(
        flows.schema.get_field_index("server_ip"), "server_ip", pa.array(["10.0.0.1", "10.0.0.300"])
    )
    with pytest.raises(ValueError, match="flows: rejected by ClickHouse.*IPV6"):
        store.insert({"flows": flows})
    assert store.query_arrow("SELECT count() AS n FROM flow_log")["n"][0].as_py() == 0


def test_unknown_kind_and_store_columns_are_refused(
    store: ClickHouseStore, batch: dict[str, pa.Table]
) -> None:
    with pytest.raises(ValueError, match="unknown kind 'packets'"):
        store.insert({"packets": batch["flows"]})
    flows = batch["flows"].append_column("inserted_at", pa.array([0] * batch["flows"].num_rows, pa.uint32()))
    with pytest.raises(ValueError, match="'inserted_at' is set by the store"):
        store.insert({"flows": flows})


def test_compatible_types_and_extra_columns_are_accepted(
    store: ClickHouseStore, batch: dict[str, pa.Table]
) -> None:
    flows = batch["flows"]
    flows = flows.set_column(
        flows.schema.get_field_index("bytes_c2s"), "bytes_c2s", flows["bytes_c2s"].cast(pa.int32())
    )
    flows = flows.set_column(
        flows.schema.get_field_index("client_ip"), "client_ip", flows["client_ip"].dictionary_encode()
    )
    flows = flows.append_column("from_a_newer_agent", pa.array([1] * flows.num_rows))
    flows = flows.drop_columns(["vm_mac", "vm_domain"])  # annotations are optional
    store.insert({"flows": flows})
    got = store.query_arrow(
        "SELECT count() AS n, sum(bytes_c2s) AS b, max(vm_domain) AS d FROM flow_log"
    ).to_pylist()[0]
    assert got == {"n": flows.num_rows, "b": sum(batch["flows"]["bytes_c2s"].to_pylist()), "d": ""}


def test_server_insert_path_stores_the_same_rows_once(
    store: ClickHouseStore, batch: dict[str, pa.Table], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The http:// path (clickhouse-connect ``insert_arrow``), exercised on chDB: same rows, same dedup."""
    store.insert(batch, BatchKey("fast", 1))
    fast = _counts(store)
    monkeypatch.setattr(store, "_chdb", None)
    key = BatchKey("arrow", 1)
    for kind, table in batch.items():  # twice each, as after a crash: the token drops the second
        store._insert_block(kind, prepare_table(kind, table), key)
    store.insert(batch, key)
    both = _counts(store)
    for table in TABLES:
        n, b = fast[table]
        assert both[table] == (None if n is None else 2 * n, 2 * b), table
    flows = batch["flows"].slice(0, 1)
    flows = flows.set_column(flows.schema.get_field_index("client_ip"), "client_ip", pa.array(["nonsense"]))
    with pytest.raises(ValueError, match="flows: rejected by ClickHouse"):
        store.insert({"flows": flows})

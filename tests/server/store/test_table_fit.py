"""check_table: refuses exactly what prepare_table refuses, and takes the cheap path for agents' own schemas."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from store_batches import MULTI_DAY, batch_of, metered

from cloudtap.server.store.table_fit import _required_when_exact, check_table, prepare_table
from cloudtap.ship.wire import decode_batch, encode_batch


@pytest.fixture(scope="module")
def sent(pcaps: Path) -> dict[str, pa.Table]:
    """One agent batch as the server decodes it from the wire."""
    return decode_batch(encode_batch("hv-1", 1, batch_of(metered(pcaps, MULTI_DAY), "hv-1"))).tables


def _refusal(kind: str, table: pa.Table) -> str | None:
    try:
        prepare_table(kind, table)
    except ValueError as exc:
        return str(exc)
    return None


def _replaced(table: pa.Table, column: str, values: pa.Array) -> pa.Table:
    return table.set_column(table.schema.get_field_index(column), column, values)


def test_agents_batches_take_the_cheap_path_and_pass(sent: dict[str, pa.Table]) -> None:
    for kind, table in sent.items():
        assert _required_when_exact(kind, table.schema), kind  # every column already as stored
        check_table(kind, table)


def _bad_tables(flows: pa.Table) -> list[pa.Table]:
    one = flows.slice(0, 2)
    n = one.num_rows
    return [
        _replaced(one, "client_ip", pa.array([1] * n, pa.int64())),
        _replaced(one, "first_ns", pa.array(["2020"] * n, pa.string())),
        _replaced(one, "server_port", pa.array([70000] * n, pa.int64())),
        _replaced(one, "packets_c2s", pa.array([None] * n, pa.uint64())),  # a null: same schema as the good one
        _replaced(one, "server_ip", pa.array([None] * n, pa.string())),
        _replaced(one, "first_ns", pa.array([1, 2**63 + 5], pa.uint64())),  # does not fit Int64 ns
        one.drop_columns(["server_ip"]),
        one.append_column("inserted_at", pa.array([0] * n, pa.uint32())),
        _replaced(one, "bytes_c2s", one["bytes_c2s"].cast(pa.string())),
    ]


def test_bad_tables_get_prepare_tables_own_message(sent: dict[str, pa.Table]) -> None:
    for bad in _bad_tables(sent["flows"]):
        message = _refusal("flows", bad)
        assert message is not None, bad.schema
        with pytest.raises(ValueError) as caught:
            check_table("flows", bad)
        assert str(caught.value) == message


def test_compatible_but_different_types_are_checked_the_slow_way(sent: dict[str, pa.Table]) -> None:
    flows = sent["flows"]
    narrow = _replaced(flows, "bytes_c2s", flows["bytes_c2s"].cast(pa.int32()))
    coded = _replaced(flows, "client_ip", flows["client_ip"].cast(pa.string()).dictionary_encode())
    big = _replaced(flows, "vm_domain", flows["vm_domain"].cast(pa.large_string()))
    assert _required_when_exact("flows", narrow.schema) is None  # a cast is needed: prepare_table decides
    assert _required_when_exact("flows", coded.schema)  # dictionary text is stored as it is
    assert _required_when_exact("flows", big.schema) is None
    for table in (narrow, coded, big):
        check_table("flows", table)
        assert _refusal("flows", table) is None
    unknown = flows.append_column("from_a_newer_agent", pa.array([1] * flows.num_rows))
    assert _required_when_exact("flows", unknown.schema)  # extra columns are ignored, as on insert
    check_table("flows", unknown)

"""The row kernel: CSV byte for byte as Arrow's CSV writer, JSON lines as ``json.dumps``, any dtype.

Oracles: ``pyarrow.csv.write_csv`` over the output table (``flows_to_arrow``, the per-record
converter) and ``json.loads`` of every line against that table's rows, on real captures and on
generated values of every magnitude.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from cloudtap.errors import CloudtapError
from cloudtap.meter import meter_file
from cloudtap.meter.records import OUTPUT_COLUMNS, flows_to_arrow
from cloudtap.meter.writers.csv import write_csv
from cloudtap.meter.writers.jsonl import write_jsonl
from cloudtap.meter.writers.rows import csv_style, json_style, write_rows
from cloudtap.schema.flow import FLOW_DTYPE

RNG = np.random.default_rng(11)
CAPTURES = (
    "PcapPlusPlus/Tests/Pcap++Test/PcapExamples/example.pcap",
    "zeek/testing/btest/Traces/tunnels/gre-aruba.pcap",
    "suricata-verify/tests/vxlan-decoder-03/vxlan.pcap",
    "PcapPlusPlus/Tests/Pcap++Test/PcapExamples/pcapng-example.pcapng",
)


def arrow_csv(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pacsv.write_csv(table, buf)
    return buf.getvalue()


def kernel_csv(flows: np.ndarray) -> bytes:
    buf = io.BytesIO()
    write_csv(flows, buf)
    return buf.getvalue()


def kernel_jsonl(flows: np.ndarray) -> bytes:
    buf = io.BytesIO()
    write_jsonl(flows, buf)
    return buf.getvalue()


def same_value(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return a == b and type(a) is type(b)


def assert_jsonl_reads_as_table(flows: np.ndarray) -> None:
    rows = flows_to_arrow(flows).to_pylist()
    lines = kernel_jsonl(flows).decode().splitlines()
    assert len(lines) == len(rows)
    for line, row in zip(lines, rows, strict=True):
        got = json.loads(line)
        assert list(got) == list(OUTPUT_COLUMNS)
        assert all(same_value(row[k], got[k]) for k in OUTPUT_COLUMNS), (row, got)


def metered(path: Path) -> np.ndarray:
    try:
        return meter_file(path, edges=False).flows
    except CloudtapError:
        return np.zeros(0, FLOW_DTYPE)


@pytest.mark.parametrize("name", CAPTURES)
def test_csv_and_jsonl_on_a_capture(shared_pcaps: Path, name: str) -> None:
    flows = metered(shared_pcaps / name)
    assert len(flows)
    assert kernel_csv(flows) == arrow_csv(flows_to_arrow(flows))
    assert_jsonl_reads_as_table(flows)


def test_csv_on_every_manifest_capture(shared_pcaps: Path) -> None:
    with (shared_pcaps / "MANIFEST.csv").open() as fh:
        paths = [shared_pcaps / row["path"] for row in csv.DictReader(fh)]
    flows = np.concatenate([metered(p) for p in paths if p.is_file()])
    assert len(flows) > 1000
    assert kernel_csv(flows) == arrow_csv(flows_to_arrow(flows))


def test_floats_read_as_arrow_and_python_write_them() -> None:
    values = np.concatenate([
        RNG.integers(-1, 10**9, 3000) / 1000.0,  # RTTs: ns / 1000
        RNG.integers(-(10**12), 10**12, 1000).astype(np.float64),  # integral, both sides of 1e9
        RNG.random(3000) * 10.0 ** RNG.integers(-12, 24, 3000),  # every magnitude, fixed and exponent
        RNG.standard_normal(1000),
        np.array([0.0, -0.0, -1.0, 1e-4, 9.999e-5, 1e-6, 1e-7, 1e9, 999999999.9999999, 1e10, 1e16, 2.0**53,
                  0.1, 1 / 3, 5e-324, 1.7976931348623157e308, np.nan, np.inf, -np.inf, 123456789.125]),
    ])  # fmt: skip
    flows = np.zeros(len(values), FLOW_DTYPE)
    flows["rtt_client_us"] = values
    flows["rtt_server_us"] = values[::-1]
    assert kernel_csv(flows) == arrow_csv(flows_to_arrow(flows))
    assert_jsonl_reads_as_table(flows)


def test_integers_at_the_limits() -> None:
    flows = np.zeros(4, FLOW_DTYPE)
    flows["flow_id"] = [0, 2**64 - 1, 10**19, 1]
    flows["start_ns"] = [-(2**63), 2**63 - 1, -1, 0]
    flows["vlan"] = [0, 2**16 - 1, 4095, 1]
    assert kernel_csv(flows) == arrow_csv(flows_to_arrow(flows))
    assert_jsonl_reads_as_table(flows)


def test_any_structured_dtype_packed_or_not() -> None:
    dtype = np.dtype(
        [("a", "u1"), ("b", "i8"), ("c", "<i2"), ("d", "f8"), ("e", "u4"), ("f", "i1")]
    )  # packed
    records = np.zeros(5, dtype)
    records["a"] = [0, 1, 255, 7, 9]
    records["b"] = [-(2**63), 2**63 - 1, -5, 0, 42]
    records["c"] = [-(2**15), 2**15 - 1, -1, 0, 3]
    records["d"] = [0.5, -1.25, 3.0, 0.1, 1e-30]
    records["e"] = [0, 2**32 - 1, 5, 6, 7]
    records["f"] = [-128, 127, -1, 0, 1]
    names = list(dtype.names or ())
    table = pa.table({n: records[n] for n in names})
    for view in (records, records[::2]):  # contiguous and strided
        buf = io.BytesIO()
        write_rows(view, names, {}, json_style(names), buf)
        rows = [json.loads(line) for line in buf.getvalue().decode().splitlines()]
        want = table.take(np.arange(len(records))[:: 1 if view is records else 2]).to_pylist()
        assert rows == want
        buf = io.BytesIO()
        write_rows(view, names, {}, csv_style(names), buf)
        expected = arrow_csv(pa.table({n: view[n] for n in names}))
        assert buf.getvalue() == expected.split(b"\n", 1)[1]  # Arrow's rows without its header


def test_big_endian_and_unaligned_records() -> None:
    dtype = np.dtype([("a", ">u4"), ("b", ">i8"), ("c", ">f8")])
    records = np.zeros(3, dtype)
    records["a"] = [1, 2**32 - 1, 7]
    records["b"] = [-(2**63), -2, 3]
    records["c"] = [0.5, -2.0, 1e300]
    raw = np.zeros(len(records) * dtype.itemsize + 1, np.uint8)
    shifted = np.frombuffer(raw.data, dtype, count=len(records), offset=1)  # not 8-byte aligned
    shifted.setflags(write=True)
    shifted[:] = records
    names = ["a", "b", "c"]
    want = pa.table({n: records[n].astype(records[n].dtype.newbyteorder("=")) for n in names})
    for view in (records, shifted):
        buf = io.BytesIO()
        write_rows(view, names, {}, json_style(names), buf)
        assert [json.loads(line) for line in buf.getvalue().decode().splitlines()] == want.to_pylist()
        buf = io.BytesIO()
        write_rows(view, names, {}, csv_style(names), buf)
        assert buf.getvalue() == arrow_csv(want).split(b"\n", 1)[1]


def test_float32_reads_as_python_writes_it_and_is_refused_in_csv() -> None:
    records = np.array([(np.float32(0.1),), (np.float32(-3.5),)], np.dtype([("x", "f4")]))
    buf = io.BytesIO()
    write_rows(records, ["x"], {}, json_style(["x"]), buf)
    assert buf.getvalue() == f'{{"x":{float(np.float32(0.1))!r}}}\n{{"x":-3.5}}\n'.encode()
    with pytest.raises(TypeError, match="float64"):
        write_rows(records, ["x"], {}, csv_style(["x"]), io.BytesIO())


def test_no_records_and_bad_input() -> None:
    empty = np.zeros(0, FLOW_DTYPE)
    assert kernel_csv(empty) == arrow_csv(flows_to_arrow(empty))
    assert kernel_jsonl(empty) == b""
    with pytest.raises(TypeError):
        write_csv(np.zeros(1, np.dtype([("x", "u1")])), io.BytesIO())
    with pytest.raises(TypeError, match="no text form"):
        write_rows(np.zeros(1, np.dtype([("x", "U3")])), ["x"], {}, json_style(["x"]), io.BytesIO())

"""Request records to Arrow / JSON lines: text fields cleaned, escaped, and equal to the numpy rows."""

from __future__ import annotations

import json

import numpy as np

from cloudtap.l7.records import OUTPUT_COLUMNS, requests_to_arrow
from cloudtap.l7.writers import jsonl_bytes
from cloudtap.schema.request import L7_DTYPE, L7_HTTP, REQ_OK, RESOURCE_BYTES


def test_text_is_printable_escaped_and_complete() -> None:
    rec = np.zeros(3, L7_DTYPE)
    rec["l7_proto"] = L7_HTTP
    rec["status"] = REQ_OK
    rec["client_lo"] = 0xFFFF_0A00_0001
    rec["server_lo"] = 0xFFFF_0A00_0002
    rec["req_ns"] = [1, 2, 3]
    rec["resource"] = [b'/a"b\\c', b"/\xff\x01x", b"r" * RESOURCE_BYTES]
    rec["request_type"] = b"GET"
    table = requests_to_arrow(rec)
    assert table.column_names == list(OUTPUT_COLUMNS)
    assert table.column("resource").to_pylist() == ['/a"b\\c', "/??x", "r" * RESOURCE_BYTES]
    assert table.column("client_ip").to_pylist() == ["10.0.0.1"] * 3
    lines = jsonl_bytes(table).decode().splitlines()
    rows = [json.loads(line) for line in lines]
    assert [r["resource"] for r in rows] == table.column("resource").to_pylist()
    assert [r["req_ns"] for r in rows] == [1, 2, 3]
    assert rows[0]["status"] == "ok" and rows[0]["l7_proto"] == "http"


def test_empty_records() -> None:
    table = requests_to_arrow(np.zeros(0, L7_DTYPE))
    assert table.num_rows == 0 and jsonl_bytes(table) == b""

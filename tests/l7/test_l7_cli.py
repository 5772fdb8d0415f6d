"""``cloudtap meter F --records l7`` in every format, on a real capture with HTTP and DNS."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from cloudtap.cli.main import app
from cloudtap.l7 import parse_file

runner = CliRunner()
CAPTURE = "PcapPlusPlus/Tests/Pcap++Test/PcapExamples/raw_ip.pcap"


@pytest.fixture
def capture(shared_pcaps: Path) -> Path:
    path = shared_pcaps / CAPTURE
    if not path.is_file():
        pytest.skip(f"{CAPTURE} is absent")
    return path


def test_jsonl_csv_parquet_agree_with_the_records(capture: Path, tmp_path: Path) -> None:
    want = parse_file(capture).requests
    outputs = {}
    for fmt in ("jsonl", "csv", "parquet"):
        out = tmp_path / f"r.{fmt}"
        result = runner.invoke(
            app, ["meter", str(capture), "--records", "l7", "--format", fmt, "-o", str(out)]
        )
        assert result.exit_code == 0, result.output
        outputs[fmt] = out
    rows = [json.loads(line) for line in outputs["jsonl"].read_text().splitlines()]
    with open(outputs["csv"], newline="") as fh:
        csv_rows = list(csv.DictReader(fh))
    table = pq.read_table(outputs["parquet"]).to_pylist()
    assert len(rows) == len(csv_rows) == len(table) == len(want) > 0
    for j, c, p, rec in zip(rows, csv_rows, table, want, strict=True):
        assert j == p
        assert j["req_ns"] == int(c["req_ns"]) == int(rec["req_ns"])
        assert j["resource"] == c["resource"] == rec["resource"].decode()
        assert j["l7_proto"] in ("http", "dns") and j["status"] in ("ok", "unanswered", "timeout")
    assert {r["l7_proto"] for r in rows} == {"http", "dns"}


def test_table_and_bad_options(capture: Path) -> None:
    result = runner.invoke(app, ["meter", str(capture), "--records", "l7"])
    assert result.exit_code == 0
    assert "Slowest requests" in result.output and "http" in result.output
    bad = runner.invoke(app, ["meter", str(capture), "--records", "l8"])
    assert bad.exit_code == 2
    bad = runner.invoke(app, ["meter", str(capture), "--records", "l7", "--format", "parquet"])
    assert bad.exit_code == 2

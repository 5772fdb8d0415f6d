"""`cloudtap meter` as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
from typer.testing import CliRunner

from cloudtap.cli.main import app
from cloudtap.cli.meter_cmd import EXIT_PARTIAL

ONE_TCP = "PcapPlusPlus/Tests/Pcap++Test/PcapExamples/one_tcp_stream.pcap"
runner = CliRunner()

DOCUMENTED = {
    "proto", "client_ip", "client_port", "server_ip", "server_port", "packets_c2s", "packets_s2c", "bytes_c2s",
    "bytes_s2c", "first_ns", "last_ns", "tcp_flags_c2s", "tcp_flags_s2c", "rtt_client_us", "rtt_server_us",
    "retrans_c2s", "retrans_s2c", "zero_window_c2s", "zero_window_s2c", "close_type", "vlan", "tunnel_type",
    "tunnel_id",
}  # fmt: skip


def test_jsonl_has_the_documented_fields(shared_pcaps: Path, tmp_path: Path) -> None:
    out = tmp_path / "flows.jsonl"
    result = runner.invoke(app, ["meter", str(shared_pcaps / ONE_TCP), "--format", "jsonl", "-o", str(out)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 1
    assert DOCUMENTED <= set(rows[0])
    assert rows[0]["packets_c2s"] + rows[0]["packets_s2c"] == 36
    assert "36 packets" in result.output


def test_table_output_and_summary(shared_pcaps: Path) -> None:
    result = runner.invoke(app, ["meter", str(shared_pcaps / ONE_TCP)])
    assert result.exit_code == 0, result.output
    assert "81.218.72.15:80" in result.output
    assert "1 flows" in result.output


def test_parquet_and_csv(shared_pcaps: Path, tmp_path: Path) -> None:
    pq_path = tmp_path / "f.parquet"
    assert runner.invoke(app, ["meter", str(shared_pcaps / ONE_TCP), "-f", "parquet", "-o", str(pq_path)]).exit_code == 0
    assert pq.read_table(pq_path).num_rows == 1
    csv_path = tmp_path / "f.csv"
    assert runner.invoke(app, ["meter", str(shared_pcaps / ONE_TCP), "-f", "csv", "-o", str(csv_path)]).exit_code == 0
    assert csv_path.read_text().splitlines()[0].startswith('"flow_id"')


def test_bad_usage_is_explained(shared_pcaps: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["meter", str(shared_pcaps / ONE_TCP), "--format", "xml"])
    assert result.exit_code == 2 and "unknown --format" in result.output
    result = runner.invoke(app, ["meter", str(tmp_path / "missing.pcap")])
    assert result.exit_code == 2 and "no such file" in result.output
    result = runner.invoke(app, ["meter", str(shared_pcaps / ONE_TCP), "--filter", "tcp port port"])
    assert result.exit_code == 1 and "error" in result.output


def test_partial_input_exit_code(shared_pcaps: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.pcap"
    cut.write_bytes((shared_pcaps / ONE_TCP).read_bytes()[:5000])
    result = runner.invoke(app, ["meter", str(cut), "-f", "jsonl"])
    assert result.exit_code == EXIT_PARTIAL
    assert "partial" in result.output and "cut.pcap" in result.output

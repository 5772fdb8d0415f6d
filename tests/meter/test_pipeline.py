"""File -> flows: totals, multiple inputs, filters and corrupt input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from cloudtap.errors import CaptureError
from cloudtap.meter import MeterConfig, meter_file

ONE_TCP = "PcapPlusPlus/Tests/Pcap++Test/PcapExamples/one_tcp_stream.pcap"


def test_one_tcp_stream_is_one_flow_with_every_packet(shared_pcaps: Path) -> None:
    result = meter_file(shared_pcaps / ONE_TCP)
    flows = result.to_arrow().to_pylist()
    assert result.frames == 36
    assert len(flows) == 1
    f = flows[0]
    assert (f["client_ip"], f["server_ip"], f["server_port"], f["proto"]) == ("10.0.0.1", "81.218.72.15", 80, 6)
    assert f["packets_c2s"] + f["packets_s2c"] == 36
    assert f["side_rule"] == "handshake"
    assert f["rtt_server_us"] > 0 and f["rtt_client_us"] > 0
    assert result.stats.metered == 36 and result.stats.table_full_packets == 0
    assert not result.partial


def test_two_files_are_one_stream(shared_pcaps: Path) -> None:
    one = meter_file(shared_pcaps / ONE_TCP)
    two = meter_file([shared_pcaps / ONE_TCP, shared_pcaps / ONE_TCP])
    assert two.frames == 2 * one.frames
    total = int(two.flows["packets_c2s"].sum() + two.flows["packets_s2c"].sum())
    assert total == 72


def test_filter_keeps_only_matching_packets(shared_pcaps: Path) -> None:
    everything = meter_file(shared_pcaps / ONE_TCP)
    syns = meter_file(shared_pcaps / ONE_TCP, bpf="tcp[tcpflags] & tcp-syn != 0")
    assert syns.frames == everything.frames
    assert int(syns.flows["packets_c2s"].sum() + syns.flows["packets_s2c"].sum()) == 2
    assert syns.filtered_out == 34


def test_truncated_file_keeps_flows_before_the_damage(shared_pcaps: Path, tmp_path: Path) -> None:
    src = shared_pcaps / ONE_TCP
    cut = tmp_path / "cut.pcap"
    data = src.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    result = meter_file(cut)
    assert result.partial
    assert result.error is not None and str(cut) in str(result.error)
    assert result.error.offset > 24
    assert 0 < result.frames < 36
    assert int(result.flows["packets_c2s"].sum() + result.flows["packets_s2c"].sum()) == result.frames


def test_corrupt_then_good_file_still_meters_the_good_one(shared_pcaps: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.pcap"
    data = (shared_pcaps / ONE_TCP).read_bytes()
    cut.write_bytes(data[:1000])
    good = tmp_path / "good.pcap"
    shutil.copy(shared_pcaps / ONE_TCP, good)
    result = meter_file([cut, good])
    assert result.partial and len(result.errors) == 1
    assert result.frames > 36


def test_not_a_capture_is_a_clear_error(tmp_path: Path) -> None:
    junk = tmp_path / "notes.pcap"
    junk.write_text("hello, this is not a capture file\n" * 10)
    with pytest.raises(CaptureError, match="notes.pcap"):
        meter_file(junk)


def test_periodic_records_sum_to_the_whole_flow(shared_pcaps: Path) -> None:
    whole = meter_file(shared_pcaps / ONE_TCP)
    sliced = meter_file(shared_pcaps / ONE_TCP, config=MeterConfig(record_interval_s=1.0))
    assert len(sliced.flows) >= len(whole.flows)
    assert len(np.unique(sliced.flows["flow_id"])) == 1
    for field in ("packets_c2s", "packets_s2c", "bytes_c2s", "bytes_s2c", "retrans_c2s", "retrans_s2c"):
        assert int(sliced.flows[field].sum()) == int(whole.flows[field].sum()), field

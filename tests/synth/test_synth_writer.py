"""write_pcap: file format, checksums (checked here in Python), truth invariants, determinism, speed."""

from __future__ import annotations

import hashlib
import struct
import time
from pathlib import Path

import pytest
import yaml

from cloudtap.schema.flow import CLOSE_NAMES
from cloudtap.synth import SynthResult, builtin_scenario, write_pcap
from cloudtap.synth.scenario import scenario_from_dict, with_overrides
from cloudtap.synth.writer import PCAP_MAGIC_NS, PCAP_MAGIC_US, inventory_path


def _records(path: Path) -> tuple[tuple[int, ...], list[tuple[int, int, int, int, bytes]]]:
    data = path.read_bytes()
    header = struct.unpack_from("<IHHiIII", data, 0)
    out = []
    off = 24
    while off < len(data):
        sec, frac, cap, orig = struct.unpack_from("<IIII", data, off)
        out.append((sec, frac, cap, orig, data[off + 16 : off + 16 + cap]))
        off += 16 + cap
    assert off == len(data)
    return header, out


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def _check_frame(frame: bytes, orig: int) -> tuple[int, str, int, str, int, int]:
    """Verify an untunnelled IPv4 frame's checksums; return (proto, src, sport, dst, dport, ip_len)."""
    frame = frame + bytes(orig - len(frame))  # the payload is zeros: restore what the snap length cut
    off = 14
    if frame[12:14] == b"\x81\x00":
        off = 18
    assert frame[off - 2 : off] == b"\x08\x00"
    ip = frame[off : off + 20]
    assert _csum(ip) == 0xFFFF, "bad IPv4 header checksum"
    total, proto = struct.unpack_from("!H", ip, 2)[0], ip[9]
    assert off + total == orig
    src, dst = ip[12:16], ip[16:20]
    l4 = frame[off + 20 : off + total]
    if proto in (6, 17):
        pseudo = src + dst + struct.pack("!BBH", 0, proto, len(l4))
        assert _csum(pseudo + l4) == 0xFFFF, f"bad L4 checksum (proto {proto})"
        sport, dport = struct.unpack_from("!HH", l4, 0)
    else:
        assert _csum(l4) == 0xFFFF, "bad ICMP checksum"
        sport = dport = struct.unpack_from("!H", l4, 4)[0]
    return proto, ".".join(map(str, src)), sport, ".".join(map(str, dst)), dport, total


@pytest.fixture(scope="module")
def short(tmp_path_factory: pytest.TempPathFactory) -> SynthResult:
    scn = with_overrides(builtin_scenario("small-cloud"), duration=20)
    return write_pcap(scn, tmp_path_factory.mktemp("w") / "short.pcap")


def test_pcap_header_and_records(short: SynthResult) -> None:
    header, recs = _records(short.path)
    assert header == (PCAP_MAGIC_NS, 2, 4, 0, 0, 262144, 1)
    assert len(recs) == short.packets > 1000
    assert short.bytes == short.path.stat().st_size
    ts = [sec * 1_000_000_000 + frac for sec, frac, *_ in recs]
    assert ts == sorted(ts)
    assert ts[0] == 1_795_132_800_000_000_000  # backup starts at the scenario start
    assert all(cap == orig == len(frame) for _, _, cap, orig, frame in recs)


def test_checksums_and_truth_agree_with_the_frames(short: SynthResult) -> None:
    _, recs = _records(short.path)
    pkts: dict[tuple, int] = {}
    nbytes: dict[tuple, int] = {}
    for *_, orig, frame in recs:
        proto, src, sport, dst, dport, total = _check_frame(frame, orig)
        key = (proto, src, sport, dst, dport)
        pkts[key] = pkts.get(key, 0) + 1
        nbytes[key] = nbytes.get(key, 0) + total
    truth = short.truth.to_pylist()
    assert sum(r["packets_c2s"] + r["packets_s2c"] for r in truth) == short.packets
    for r in truth:
        c2s = (r["proto"], r["client_ip"], r["client_port"], r["server_ip"], r["server_port"])
        s2c = (r["proto"], r["server_ip"], r["server_port"], r["client_ip"], r["client_port"])
        assert (pkts.get(c2s, 0), pkts.get(s2c, 0)) == (r["packets_c2s"], r["packets_s2c"])
        assert (nbytes.get(c2s, 0), nbytes.get(s2c, 0)) == (r["bytes_c2s"], r["bytes_s2c"])


def test_truth_columns(short: SynthResult) -> None:
    t = short.truth
    assert t.num_rows == short.flows
    for name in (
        "proto",
        "client_ip",
        "client_port",
        "server_ip",
        "server_port",
        "packets_c2s",
        "packets_s2c",
        "bytes_c2s",
        "bytes_s2c",
        "first_ns",
        "last_ns",
        "retrans_c2s",
        "retrans_s2c",
        "zero_window_c2s",
        "zero_window_s2c",
        "close_type",
        "rtt_server_us",
        "rtt_client_us",
        "vlan",
        "tunnel_type",
        "tunnel_id",
        "client_project",
        "client_vm",
        "server_project",
        "server_vm",
    ):
        assert name in t.column_names
    rows = t.to_pylist()
    assert {r["close_type"] for r in rows} <= set(CLOSE_NAMES)
    assert all(r["first_ns"] <= r["last_ns"] for r in rows)
    assert all(r["close_type"] == "timeout" for r in rows if r["proto"] != 6)
    backup = next(r for r in rows if r["service"] == "hourly-db-backup")
    assert (backup["client_vm"], backup["server_vm"], backup["server_port"]) == ("db-01", "backup-01", 873)
    assert backup["close_type"] == "forced_end" and backup["payload_bytes_s2c"] == 0
    assert all(r["vlan"] in (101, 102, 103) and r["tunnel_type"] == 0 for r in rows)
    done = [r for r in rows if r["proto"] == 6 and r["close_type"] == "fin"]
    assert all(50 <= r["rtt_server_us"] <= 500 and 20 <= r["rtt_client_us"] <= 200 for r in done)


def test_inventory_file(short: SynthResult) -> None:
    inv = yaml.safe_load(inventory_path(short.path).read_text())
    assert inv == short.inventory
    assert inv["scenario"] == "small-cloud" and len(inv["vms"]) == 30
    ips = {v["ip"] for v in inv["vms"]}
    assert {r["client_ip"] for r in short.truth.to_pylist()} <= ips


def test_snaplen_truncates_but_keeps_orig_len(tmp_path: Path) -> None:
    scn = with_overrides(builtin_scenario("small-cloud"), duration=10, snaplen=96, ts_precision="us")
    res = write_pcap(scn, tmp_path / "snap.pcap")
    header, recs = _records(res.path)
    assert header[0] == PCAP_MAGIC_US and header[5] == 96
    assert all(cap == min(orig, 96) for _, _, cap, orig, _ in recs)
    assert any(orig > 1000 for *_, orig, _ in recs)
    assert all(frac < 1_000_000 for _, frac, *_ in recs)
    for *_, orig, frame in recs[:3000]:
        _check_frame(frame, orig)


@pytest.mark.parametrize(("encap", "overhead"), [("vxlan", 50), ("gre-teb", 42), ("erspan2", 50)])
def test_tunnel_frames_wrap_the_vm_frame(tmp_path: Path, encap: str, overhead: int) -> None:
    res = write_pcap(
        with_overrides(builtin_scenario("small-cloud"), duration=5, encapsulation=encap), tmp_path / "t.pcap"
    )
    _, recs = _records(res.path)
    tunnelled = [
        (orig, frame)
        for *_, orig, frame in recs
        if frame[12:14] == b"\x08\x00"
        and frame[23] in (17, 47)
        and frame[34 + 2 : 34 + 4] in (b"\x12\xb5", b"\x65\x58", b"\x88\xbe")
    ]
    assert tunnelled
    for orig, frame in tunnelled:
        assert _csum(frame[14:34]) == 0xFFFF  # outer IPv4 header
        _check_frame(frame[overhead:], orig - overhead)  # the VM's frame inside, checksums intact


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    scn = with_overrides(builtin_scenario("small-cloud"), duration=8)
    digests = []
    for name, s in (("a", scn), ("b", scn), ("c", with_overrides(scn, seed=scn.seed + 1))):
        res = write_pcap(s, tmp_path / f"{name}.pcap")
        digests.append(hashlib.sha256(res.path.read_bytes()).hexdigest())
    assert digests[0] == digests[1] != digests[2]


def test_progress_reports_every_chunk(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    res = write_pcap(
        with_overrides(builtin_scenario("small-cloud"), duration=5),
        tmp_path / "p.pcap",
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls[0] == (0, res.packets) and calls[-1] == (res.packets, res.packets)


@pytest.mark.slow
def test_bench_scenario_is_big_and_fast(tmp_path: Path) -> None:
    write_pcap(with_overrides(builtin_scenario("bench"), duration=1), tmp_path / "warm.pcap")  # JIT warm-up
    started = time.perf_counter()
    res = write_pcap(builtin_scenario("bench"), tmp_path / "bench.pcap")
    elapsed = time.perf_counter() - started
    assert res.packets >= 1_000_000 and res.flows >= 25_000
    res.path.unlink()  # ~0.5 GB: do not leave it in the kept temp folders
    assert elapsed < 15, f"bench.yaml took {elapsed:.1f} s"


def test_a_quiet_cloud_writes_an_empty_but_valid_pcap(tmp_path: Path) -> None:
    scn = scenario_from_dict(
        {"duration": 5, "cloud": {"hosts": 1, "projects": [{"name": "p", "vms": [{"role": "a"}]}]}}
    )
    res = write_pcap(scn, tmp_path / "empty.pcap")
    header, recs = _records(res.path)
    assert header[0] == PCAP_MAGIC_NS and recs == []
    assert (res.packets, res.flows, res.bytes) == (0, 0, 24)
    assert "close_type" in res.truth.column_names

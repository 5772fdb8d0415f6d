"""The agent's rolling packet store: round trip against tcpdump, rotation, index skips, drops, restart."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from capture_frames import frames_of
from cloudtap.agent.config import PacketsSection
from cloudtap.agent.packet_query import PacketQueryTooLarge
from cloudtap.agent.packet_store import PacketStore
from cloudtap.capture.pcap_file import CaptureFile
from cloudtap.decode import decode_frames
from cloudtap.errors import FilterError

SNAP = 200


@pytest.fixture(scope="module")
def synth_pcap(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cloudtap.synth import builtin_scenario, write_pcap
    from cloudtap.synth.scenario import with_overrides

    path = tmp_path_factory.mktemp("synth") / "cloud.pcap"
    write_pcap(with_overrides(builtin_scenario("small-cloud"), duration="1m"), path)
    return path


def feed(store: PacketStore, pcap: Path, batch: int = 4096) -> int:
    n = 0
    with CaptureFile(pcap) as cf:
        for frames in cf.batches(batch):
            n += store.append(frames, decode_frames(frames))
    assert store.sync()
    return n


def make_store(tmp_path: Path, **kw: object) -> PacketStore:
    cfg = {"enabled": True, "directory": tmp_path / "packets", "max_disk_mib": 256, "snaplen": SNAP, "block_kib": 256}
    cfg.update(kw)
    return PacketStore(PacketsSection(**cfg))


def reference(original: Path, bpf: str, lo: int, hi: int, tmp: Path) -> tuple[np.ndarray, np.ndarray, list[bytes]]:
    """tcpdump's answer for the filter, cut to the window and the snap length."""
    out = tmp / "ref.pcap"
    subprocess.run(["tcpdump", "--time-stamp-precision=nano", "-r", str(original), "-w", str(out), bpf], check=True, capture_output=True)
    ts, wl, data = frames_of(out)
    keep = (ts >= lo) & (ts < hi)
    return ts[keep], wl[keep], [d[:SNAP] for d, k in zip(data, keep.tolist(), strict=True) if k]


def write_query(store: PacketStore, lo: int, hi: int, bpf: str | None, out: Path) -> Path:
    q = store.query(lo, hi, bpf)
    with out.open("wb") as f:
        for chunk in q.pcapng_chunks("hv-1"):
            f.write(chunk)
    return out


def test_window_and_filter_equal_tcpdump(synth_pcap: Path, tmp_path: Path) -> None:
    store = make_store(tmp_path)
    assert feed(store, synth_pcap) == store.stats.packets_written > 10_000
    idx = store.index()
    lo, hi = int(idx["min_ts"].min()), int(idx["max_ts"].max())
    a, b = lo + (hi - lo) // 3, lo + (hi - lo) // 2
    bpf = "vlan and tcp and port 873"
    out = write_query(store, a, b, bpf, tmp_path / "out.pcapng")
    tshark = subprocess.run(["tshark", "-r", str(out), "-T", "fields", "-e", "frame.time_epoch"],
                            capture_output=True, text=True, check=True)  # fmt: skip
    ts, wl, data = frames_of(out)
    rts, rwl, rdata = reference(synth_pcap, bpf, a, b, tmp_path)
    assert len(rts) > 100
    assert len(tshark.stdout.split()) == len(rts)
    assert np.array_equal(ts, rts) and np.array_equal(wl, rwl)
    assert data == rdata
    store.close()


def test_index_skips_blocks_outside_window_and_hosts(tmp_path: Path) -> None:
    from scapy.all import IP, TCP, Ether, wrpcap

    base = 1_700_000_000.0
    pkts = []
    for i in range(3000):  # first half A<->B, second half C<->D: different blocks
        src, dst = ("10.0.0.1", "10.0.0.2") if i < 1500 else ("10.0.0.3", "10.0.0.4")
        p = Ether() / IP(src=src, dst=dst) / TCP(sport=1000 + i % 7, dport=80) / (b"x" * 100)
        p.time = base + i * 0.001
        pkts.append(p)
    pcap = tmp_path / "ab.pcap"
    wrpcap(str(pcap), pkts)
    store = make_store(tmp_path, block_kib=16)
    feed(store, pcap, batch=256)
    idx = store.index()
    assert len(idx) >= 8
    t0, t1 = int(idx["min_ts"].min()), int(idx["max_ts"].max()) + 1
    q = store.query(t0, t1, "host 10.0.0.3")
    assert 0 < len(q.blocks) < len(idx) * 0.7  # blocks of A<->B only are skipped by their bloom
    assert sum(len(b) for b in q.batches()) == 1500
    assert q.blocks_read == len(q.blocks)
    assert len(store.query(t0, t1, "host 10.0.0.3 or host 10.0.0.1").blocks) == len(idx)  # opaque: no skip
    mid = int(idx["max_ts"][2])
    q = store.query(t0, mid, None)
    assert len(q.blocks) == 3 + int((idx["min_ts"][3:] <= mid).sum())
    assert sum(len(b) for b in q.batches()) == int(np.count_nonzero(np.arange(3000) * 1_000_000 + t0 < mid))
    assert q.skipped_blocks == len(idx) - len(q.blocks)
    assert store.stats.blocks_skipped > 0
    rows = list(store.read(t0, t1, "tcp and port 80 and host 10.0.0.4", max_bytes=10 << 20))
    assert len(rows) == 1500 and rows[0][0] == "if0" and rows[0][1] >= t0 and len(rows[0][2]) == 154
    with pytest.raises(PacketQueryTooLarge):
        list(store.read(t0, t1, None, max_bytes=10_000))
    with pytest.raises(FilterError):
        store.query(t0, t1, "host and and")
    store.close()


def test_rotation_stays_within_budget_and_counts_evictions(synth_pcap: Path, tmp_path: Path) -> None:
    store = make_store(tmp_path, max_disk_mib=2, block_kib=64)
    fed = feed(store, synth_pcap)
    s = store.stats
    disk = sum(f.stat().st_size for f in (tmp_path / "packets").glob("seg-*"))
    assert disk == s.disk_bytes <= 2 << 20
    assert s.evicted_segments > 0 and s.segments >= 2
    assert s.packets_written == fed and s.evicted_packets + s.stored_packets == fed
    idx = store.index()
    with CaptureFile(synth_pcap) as cf:
        first = next(cf.batches(10)).ts_ns[0]
    assert int(idx["min_ts"].min()) > first  # the oldest packets are gone
    assert sum(len(b) for b in store.query(int(first), int(idx["min_ts"].min()), None).batches()) == 0
    store.configure(max_disk_mib=1)
    assert store.stats.disk_bytes <= 1 << 20
    store.close()


def test_slow_disk_drops_are_counted(synth_pcap: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = make_store(tmp_path, max_pending_mib=1, block_kib=64)
    slow = store._write_block

    def sleepy(body: bytes, rec: np.ndarray) -> None:
        time.sleep(0.05)
        slow(body, rec)

    monkeypatch.setattr(store, "_write_block", sleepy)
    fed = feed(store, synth_pcap)
    s = store.stats
    assert s.dropped_packets > 0
    assert s.packets_written + s.dropped_packets == fed
    store.close()


def test_restart_recovers_index_and_policy_applies_live(synth_pcap: Path, tmp_path: Path) -> None:
    store = make_store(tmp_path)
    feed(store, synth_pcap)
    idx = store.index()
    lo, hi = int(idx["min_ts"].min()), int(idx["max_ts"].max()) + 1
    before = sum(len(b) for b in store.query(lo, hi, "vlan and udp").batches())
    store.close()
    again = make_store(tmp_path)
    assert np.array_equal(again.index(), idx)
    assert sum(len(b) for b in again.query(lo, hi, "vlan and udp").batches()) == before > 0
    assert [i.name for i in again.interfaces()] == ["if0"]
    again.configure(interfaces=["tap*"])  # if0 is no longer selected
    n = feed(again, synth_pcap)
    assert n == 0 and again.stats.not_selected_packets > 10_000
    with pytest.raises(ValueError):
        again.configure(directory="/tmp/x")
    again.close()
    shutil.rmtree(tmp_path / "packets")

"""Tests for PolicyFilter: per-policy snap lengths in one kernel program, on real AF_PACKET rings.

The live test builds a virtual network (tests/netns.py): ``vm1``'s policy keeps 512 bytes of payload,
``vm2``'s keeps headers only, ``vm3`` is selected by neither. The combined program is attached to the
TPACKET_V3 ring of every tap (the way the agent attaches it); the kernel itself cuts each frame to the
snap length of the policy that accepted it. tcpdump on the same tap with each policy's own filter and
snap length is the oracle of what each policy alone would have kept.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from cloudtap.capture.afpacket import AfPacketSource, RingConfig
from cloudtap.capture.frames import FrameBatch
from cloudtap.capture.policy_filter import HEADER_BYTES, FilterPart, PolicyFilter, payload_snaplen
from cloudtap.capture.policy_source import PolicySource
from cloudtap.errors import CaptureError, FilterError
from cloudtap.meter.pipeline import _select
from netns import VirtualNetwork, needs_netns

TCPDUMP = shutil.which("tcpdump")
HEADERS = 128  #: the header-only snap length of this test's capture
PAYLOAD = 512
SMALL = RingConfig(block_size=1 << 16, block_count=8, block_timeout_ms=5)


def _frame(dst: str, src: str, payload: int, vlan: int | None = None) -> bytes:
    """An Ethernet (optionally 802.1Q) IPv4 UDP frame with ``payload`` bytes after the UDP header."""
    eth = bytes.fromhex(dst.replace(":", "") + src.replace(":", ""))
    if vlan is not None:
        eth += b"\x81\x00" + vlan.to_bytes(2, "big")
    ip = bytes(
        [0x45, 0, *(28 + payload).to_bytes(2, "big"), 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]
    )
    udp = (4000).to_bytes(2, "big") + (5000).to_bytes(2, "big") + (8 + payload).to_bytes(2, "big") + b"\0\0"
    return eth + b"\x08\x00" + ip + udp + bytes(payload)


def _batch(frames: list[bytes]) -> FrameBatch:
    caps = np.array([len(f) for f in frames], np.uint32)
    offset = np.zeros(len(frames), np.int64)
    offset[1:] = np.cumsum(caps[:-1], dtype=np.int64)
    return FrameBatch(
        data=np.frombuffer(b"".join(frames), np.uint8).copy(),
        offset=offset,
        cap_len=caps.copy(),
        wire_len=caps.copy(),
        ts_ns=np.arange(len(frames), dtype=np.int64),
        linktype=np.ones(len(frames), np.uint16),
        interface=np.zeros(len(frames), np.uint16),
    )


A, B, C = "02:00:00:00:00:0a", "02:00:00:00:00:0b", "02:00:00:00:00:0c"


def _two_policies(vlan_bpf: str | None = None) -> PolicyFilter:
    return PolicyFilter(
        [
            FilterPart(select=f"ether host {B}", bpf=vlan_bpf, policy="headers"),
            FilterPart(
                select=f"ether host {A}", snaplen=payload_snaplen(PAYLOAD), requests=True, policy="payload"
            ),
        ],
        default_snaplen=HEADERS,
    )


def test_parts_are_tried_largest_snaplen_first_and_cut_frames() -> None:
    flt = _two_policies()
    assert [p.policy for p in flt.parts] == ["payload", "headers"]
    assert flt.snaplens == [HEADER_BYTES + PAYLOAD, HEADERS] and flt.max_snaplen == HEADER_BYTES + PAYLOAD
    assert flt.requests
    frames = [
        _frame(C, A, 1000),
        _frame(C, B, 1000),
        _frame(A, B, 1000),
        _frame(C, C, 1000),
        _frame(B, C, 10),
    ]
    batch = _batch(frames)
    keep, part = flt.classify(batch)
    assert keep.tolist() == [656, 128, 656, 0, 128] and part.tolist() == [0, 1, 0, -1, 1]
    # A <-> B: both policies select it; the one keeping payload comes first
    assert flt.wants_requests(batch).tolist() == [True, False, True, False, False]
    mask = flt.mask(batch)
    assert mask.tolist() == [True, True, True, False, True]
    assert batch.cap_len.tolist() == [656, 128, 656, 1042, 52]  # cut in place; the rejected one untouched
    assert (flt.matched, flt.rejected) == (4, 1)
    # the pipeline's next step asks on the kept frames: the parts mask found, no second run of the programs
    kept = _select(batch, mask)
    runs = flt.classify
    flt.classify = None  # type: ignore[assignment,method-assign]
    assert flt.wants_requests(kept).tolist() == [True, False, True, False]
    flt.classify = runs  # type: ignore[method-assign]
    assert flt.wants_requests(kept).tolist() == [True, False, True, False]  # asked again: run again, same answer


def test_vlan_parts_are_widened_for_the_kernel_only() -> None:
    flt = _two_policies(vlan_bpf="vlan 7")
    assert flt.expressions()[1] == f"(ether host {B}) and (vlan 7)"
    assert flt.expressions(kernel=True)[1] == f"ether host {B}"
    tagged, other = _frame(C, B, 100, vlan=7), _frame(C, B, 100, vlan=8)
    keep, _ = flt.classify(_batch([tagged, other]))
    assert keep.tolist() == [HEADERS, 0]
    kernel = flt.kernel_program(1)
    assert kernel.match(_batch([tagged, other])).tolist() == [True, True]  # a superset, decided in the worker
    base = PolicyFilter([FilterPart(select=f"ether host {A}", snaplen=300)], base="udp port 5000")
    assert base.expressions() == [f"(udp port 5000) and (ether host {A})"]


def test_entries_and_errors() -> None:
    entries = [{"select": f"ether host {A}", "bpf": "udp", "snaplen": 700, "requests": True, "policy": "p"}]
    flt = PolicyFilter.from_entries(entries, default_snaplen=HEADERS)
    assert flt is not None and flt.parts[0] == FilterPart(f"ether host {A}", "udp", 700, True, "p")
    assert PolicyFilter.from_entries([]) is None
    with pytest.raises(FilterError, match="syntax error"):
        PolicyFilter([FilterPart(select="ether host", snaplen=100)])
    with pytest.raises(FilterError, match="at least one"):
        PolicyFilter([])
    assert payload_snaplen(0) == HEADER_BYTES and payload_snaplen(70000) == 65535


def _read_all(src: AfPacketSource, expect: int, max_s: float = 5.0) -> tuple[np.ndarray, ...]:
    """(interface, cap_len, wire_len, udp dport) of the frames read until ``expect`` arrived and 0.2 s passed."""
    parts: list[tuple[np.ndarray, ...]] = []
    total, last, deadline = 0, time.monotonic(), time.monotonic() + max_s
    while time.monotonic() < deadline:
        batch = src.read(0.02)
        if batch is not None and len(batch):
            total, last = total + len(batch), time.monotonic()
            at = batch.offset + 36
            dport = (batch.data[at].astype(np.int64) << 8) | batch.data[at + 1]
            parts.append((batch.interface.copy(), batch.cap_len.copy(), batch.wire_len.copy(), dport))
        elif total >= expect and time.monotonic() - last > 0.2:
            break
    return tuple(np.concatenate([p[i] for p in parts]) if parts else np.zeros(0, np.int64) for i in range(4))


@contextmanager
def _tcpdump(iface: str, expr: str, snaplen: int, out: Path) -> Iterator[None]:
    proc = subprocess.Popen(
        [
            TCPDUMP or "tcpdump",
            "-i",
            iface,
            "--immediate-mode",
            "-s",
            str(snaplen),
            "-U",
            "-w",
            str(out),
            expr,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # "listening on IFACE ..." once the capture runs
        assert "listening" in line, line
        yield
        time.sleep(0.3)
    finally:
        proc.terminate()
        proc.wait(timeout=5)


def _caplens(path: Path) -> list[tuple[int, int]]:
    from scapy.utils import RawPcapReader

    with RawPcapReader(str(path)) as reader:
        return [(len(data), int(meta.wirelen)) for data, meta in reader]


@needs_netns
def test_each_policy_keeps_its_own_snaplen_in_the_kernel(tmp_path: Path) -> None:
    with VirtualNetwork(prefix="pf") as net:
        vm1 = net.add_vm("vm1", "10.78.0.1/24")
        vm2 = net.add_vm("vm2", "10.78.0.2/24")
        vm3 = net.add_vm("vm3", "10.78.0.3/24")
        payload_part = FilterPart(f"ether host {vm1.mac}", "udp", payload_snaplen(PAYLOAD), True, "payload")
        headers_part = FilterPart(f"ether host {vm2.mac}", "udp", None, False, "headers")
        flt = PolicyFilter([headers_part, payload_part], default_snaplen=HEADERS)
        snap1 = HEADER_BYTES + PAYLOAD
        taps = [vm1.tap_name, vm2.tap_name, vm3.tap_name]
        src = PolicySource(taps, SMALL, flt)
        oracle = tmp_path / "vm1.pcap", tmp_path / "vm2.pcap"
        try:
            with (
                _tcpdump(vm1.tap_name, f"ether host {vm1.mac} and udp", snap1, oracle[0])
                if TCPDUMP
                else _nothing(),
                _tcpdump(vm2.tap_name, f"ether host {vm2.mac} and udp", HEADERS, oracle[1])
                if TCPDUMP
                else _nothing(),
                vm3.udp_sink(5001),
                vm3.udp_sink(5002),
                vm3.udp_sink(5003),
            ):
                vm1.send_udp(vm3.ip, 5001, count=5, size=1200)  # payload policy, cut at snap1
                vm1.send_udp(vm3.ip, 5002, count=5, size=100)  # payload policy, shorter than snap1
                vm2.send_udp(vm3.ip, 5003, count=5, size=1200)  # headers policy, cut at HEADERS
                vm3.ping(vm1.ip, count=2)  # ICMP: neither policy's udp filter takes it
                iface, cap, wire, dport = _read_all(src, expect=30)
                names = src.interfaces
        finally:
            src.close()
        on = {name: np.asarray([names[i] == name for i in iface]) for name in taps}
        w1200, w100 = 14 + 20 + 8 + 1200, 14 + 20 + 8 + 100
        for tap in (vm1.tap_name, vm3.tap_name):  # vm1's datagrams on its own tap and on vm3's
            sel = on[tap] & (dport == 5001)
            assert sel.sum() == 5 and (wire[sel] == w1200).all() and (cap[sel] == snap1).all()
            sel = on[tap] & (dport == 5002)
            assert sel.sum() == 5 and (cap[sel] == w100).all()
        for tap in (vm2.tap_name, vm3.tap_name):
            sel = on[tap] & (dport == 5003)
            assert sel.sum() == 5 and (wire[sel] == w1200).all() and (cap[sel] == HEADERS).all()
        assert len(cap) == 30  # no ICMP, nothing else
        if TCPDUMP:  # each policy alone, as tcpdump captures it with its own snap length
            assert sorted(_caplens(oracle[0])) == sorted(
                zip(cap[on[vm1.tap_name]], wire[on[vm1.tap_name]], strict=True)
            )
            assert sorted(_caplens(oracle[1])) == sorted(
                zip(cap[on[vm2.tap_name]], wire[on[vm2.tap_name]], strict=True)
            )


@contextmanager
def _nothing() -> Iterator[None]:
    yield


@needs_netns
def test_a_new_policy_filter_applies_to_open_sockets_at_once() -> None:
    with VirtualNetwork(prefix="pg") as net:
        vm1 = net.add_vm("vm1", "10.79.0.1/24")
        vm2 = net.add_vm("vm2", "10.79.0.2/24")
        src = PolicySource([vm1.tap_name], replace(SMALL, snaplen=HEADERS, bpf="udp"))  # no policy yet
        try:
            with vm2.udp_sink(5001):
                vm1.send_udp(vm2.ip, 5001, count=3, size=1200)
                _, before, _, _ = _read_all(src, expect=3)
                flt = PolicyFilter(
                    [FilterPart(f"ether host {vm1.mac}", "udp", payload_snaplen(PAYLOAD), True)]
                )
                src.set_policy_filter(flt)
                vm1.send_udp(vm2.ip, 5001, count=3, size=1200)
                _, after, _, _ = _read_all(src, expect=3)
                src.set_policy_filter(None)  # back to capture.bpf and its snaplen
                vm1.send_udp(vm2.ip, 5001, count=3, size=1200)
                _, again, _, _ = _read_all(src, expect=3)
        finally:
            src.close()
        assert before.tolist() == [HEADERS] * 3
        assert after.tolist() == [HEADER_BYTES + PAYLOAD] * 3
        assert again.tolist() == [HEADERS] * 3
        with pytest.raises(CaptureError, match="closed"):
            src.set_policy_filter(None)

"""Broker config validation, the per-destination token bucket (real sockets) and the host fuse."""

from __future__ import annotations

import socket
import threading
import time

import numpy as np
import pytest
from pydantic import ValidationError
from test_broker_encap import batch, udp_frame

from cloudtap.agent.identity import ObservationPoints
from cloudtap.broker.broker import Broker
from cloudtap.broker.bucket import TokenBucket
from cloudtap.broker.config import BrokerSection, FuseSection
from cloudtap.broker.fuse import HostFuse, HostSample, read_host
from cloudtap.decode.decode import decode_frames


def test_config_rejects_what_cannot_work() -> None:
    def bad(doc: dict) -> str:  # type: ignore[type-arg]
        with pytest.raises(ValidationError) as err:
            BrokerSection.model_validate(doc)
        return str(err.value)

    gre = {"name": "a", "encap": "gre", "address": "192.0.2.1"}
    assert "unique" in bad({"destinations": [gre, gre]})
    assert "unknown destinations" in bad(
        {"destinations": [gre], "rules": [{"name": "r", "destinations": ["b"]}]}
    )
    assert "needs 'interface'" in bad({"destinations": [{"name": "r", "encap": "raw"}]})
    assert "needs 'address'" in bad({"destinations": [{"name": "v", "encap": "vxlan"}]})
    assert "IPv4 or IPv6" in bad({"destinations": [{**gre, "address": "tool.example"}]})
    assert "same IP version" in bad({"destinations": [{**gre, "source": "2001:db8::1"}]})
    assert "gre only" in bad({"destinations": [{**gre, "encap": "erspan2", "key": 1}]})
    assert "MAC" in bad({"rules": [{"name": "r", "macs": ["zz"]}]})
    assert "extra" in bad({"destinations": [{**gre, "colour": "red"}]})
    ok = BrokerSection.model_validate({"destinations": [{**gre, "address": " 2001:DB8::1 "}]})
    assert ok.destinations[0].address == "2001:db8::1" and ok.destinations[0].ip_version == 6


def test_bucket_admits_a_prefix_within_rate_and_burst() -> None:
    now = [0.0]
    bucket = TokenBucket(8000, 1000, clock=lambda: now[0])  # 1000 bytes/s, 1000 deep
    assert bucket.admit(np.full(5, 300)) == 3
    now[0] = 0.5  # +500 bytes: 600 left
    assert bucket.admit(np.array([600, 1])) == 1
    now[0] = 100.0  # full again, never beyond the depth
    assert bucket.admit(np.full(10, 100)) == 10
    assert TokenBucket(0, 1).admit(np.full(1000, 1500)) == 1000


def test_cap_holds_over_seconds_on_a_real_socket() -> None:
    """Copies sent to a real UDP receiver at full speed for 10 s (the issue's window) never exceed the cap by more
    than 5%."""
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(0.3)
    cap_bps, burst = 4_000_000, 16_000
    section = BrokerSection.model_validate({
        "enabled": True,
        "destinations": [{"name": "t", "encap": "vxlan", "address": "127.0.0.1", "port": rx.getsockname()[1],
                          "max_bps": cap_bps, "burst_bytes": burst}],
        "rules": [{"name": "r", "interfaces": ["tap0"], "destinations": ["t"]}]})  # fmt: skip
    points = ObservationPoints()
    points.register("tap0")
    broker = Broker(section, points)
    received = []
    done = threading.Event()

    def receive() -> None:
        while True:
            try:
                received.append((time.monotonic(), len(rx.recv(65536))))
            except TimeoutError:
                if done.is_set():
                    return

    thread = threading.Thread(target=receive)
    thread.start()
    frames = batch([udp_frame(1000 + i % 7) for i in range(64)])
    rows = decode_frames(frames)
    started = time.monotonic()
    n = 0
    while time.monotonic() - started < 10.0:
        n += 1
        ts = frames.ts_ns + n * 10**9  # never duplicates of the previous batch
        shifted = type(frames)(frames.data, frames.offset, frames.cap_len, frames.wire_len, ts, frames.linktype,
                               frames.interface)  # fmt: skip
        broker.process(shifted, decode_frames(shifted))
    elapsed = time.monotonic() - started
    done.set()
    thread.join()
    rx.close()
    c = broker.status()["destinations"]["t"]
    assert c["drops_cap"] > 0 and c["packets"] == len(received) > 0 and rows.shape[0] == 64
    allowed_bytes = burst + cap_bps / 8 * elapsed
    assert c["bytes"] <= allowed_bytes * 1.05
    sent_bits = 8 * sum(size + 28 for _, size in received)  # what arrived, with its IPv4 + UDP headers
    assert sent_bits <= allowed_bytes * 8 * 1.05 and sent_bits == 8 * c["bytes"]
    broker.close()


def test_fuse_trips_and_recovers_with_hysteresis() -> None:
    now = [0.0]
    sample = [HostSample(0, 0, 0)]
    fuse = HostFuse(FuseSection(uplink_interfaces=["up0"], max_uplink_bps=8_000_000, resume_ratio=0.5),
                    reader=lambda names: sample[0], clock=lambda: now[0])  # fmt: skip

    def second(bytes_per_s: int) -> bool:
        now[0] += 1.0
        sample[0] = HostSample(sample[0].uplink_bytes + bytes_per_s, 0, 0)
        return fuse.check()

    assert not second(500_000)  # 4 Mbit/s
    assert second(2_000_000) and "uplink" in fuse.reason and fuse.trips == 1  # 16 Mbit/s
    assert second(700_000)  # 5.6 Mbit/s: below the threshold, not below half of it
    assert not second(400_000) and fuse.reason == ""  # 3.2 Mbit/s
    now[0] += 0.5
    sample[0] = HostSample(sample[0].uplink_bytes + 10**9, 0, 0)
    assert not fuse.check()  # evaluated once a second only


def test_fuse_on_real_counters_stops_forwarding_and_counts_it() -> None:
    """The real loopback and /proc/stat counters with a threshold the test's own traffic exceeds."""
    assert read_host(["lo"]).cpu_total > 0
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    section = BrokerSection.model_validate({
        "enabled": True,
        "destinations": [{"name": "t", "encap": "vxlan", "address": "127.0.0.1", "port": rx.getsockname()[1]}],
        "rules": [{"name": "r", "interfaces": ["*"], "destinations": ["t"]}],
        "fuse": {"uplink_interfaces": ["lo"], "max_uplink_bps": 8, "resume_ratio": 0.5}})  # fmt: skip
    points = ObservationPoints()
    points.register("tap0")
    broker = Broker(section, points)
    frames = batch([udp_frame(100)])
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.sendto(b"x" * 1000, rx.getsockname())  # more than 8 bit/s on lo
    time.sleep(1.05)
    broker.process(frames, decode_frames(frames))
    s = broker.status()
    assert s["fuse_open"] and "uplink" in s["fuse_reason"] and s["destinations"]["t"]["drops_fuse"] == 1
    assert s["destinations"]["t"]["packets"] == 0
    broker.apply(section.model_copy(update={"fuse": FuseSection()}))  # unwatched: closes at once
    later = batch([udp_frame(100)], ts0=2_000_000_000_000_000_000)
    broker.process(later, decode_frames(later))
    assert broker.status()["destinations"]["t"]["packets"] == 1 and not broker.status()["fuse_open"]
    tx.close()
    rx.close()
    broker.close()

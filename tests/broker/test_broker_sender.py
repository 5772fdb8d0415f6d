"""Batched sends: segmented VXLAN sends arrive as separate datagrams; failures are counted, never raised."""

from __future__ import annotations

import socket

import numpy as np
from test_broker_encap import batch, udp_frame

from cloudtap.agent.identity import ObservationPoints
from cloudtap.broker import _encap_kernels as _k
from cloudtap.broker.broker import Broker
from cloudtap.broker.config import BrokerSection, Destination
from cloudtap.broker.sender import Sender
from cloudtap.decode.decode import decode_frames


def groups(
    lengths: list[int], max_segments: int = 64, max_bytes: int = 65000
) -> list[tuple[int, int, int, int]]:
    length = np.array(lengths, np.int64)
    offset = np.concatenate([[0], np.cumsum(length[:-1])]).astype(np.int64)
    n = len(lengths)
    out = [np.empty(n, np.int64) for _ in range(4)]
    g = _k.gso_groups(offset, length, max_segments, max_bytes, *out)
    return [tuple(int(a[i]) for a in out) for i in range(g)]  # type: ignore[misc]


def test_gso_groups_are_equal_runs_ending_with_at_most_one_shorter() -> None:
    assert groups([136, 136, 136, 100, 136]) == [(0, 4, 136, 508), (4, 1, 136, 136)]
    assert groups([100, 136, 136]) == [(0, 1, 100, 100), (1, 2, 136, 272)]
    assert groups([10] * 5, max_segments=2) == [(0, 2, 10, 20), (2, 2, 10, 20), (4, 1, 10, 10)]
    assert groups([1000] * 3, max_bytes=2500) == [(0, 2, 1000, 2000), (2, 1, 1000, 1000)]


def test_equal_copies_sent_segmented_arrive_one_datagram_each() -> None:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(0.5)
    section = BrokerSection.model_validate({
        "enabled": True,
        "destinations": [{"name": "t", "encap": "vxlan", "address": "127.0.0.1", "port": rx.getsockname()[1]}],
        "rules": [{"name": "r", "interfaces": ["tap0"], "truncate": 128, "destinations": ["t"]}]})  # fmt: skip
    points = ObservationPoints()
    points.register("tap0")
    broker = Broker(section, points)
    frames = batch([udp_frame(300 + i) for i in range(150)] + [udp_frame(50)])
    broker.process(frames, decode_frames(frames))
    got = []
    try:
        while True:
            got.append(rx.recv(65536))
    except TimeoutError:
        pass
    rx.close()
    want = [
        bytes(frames.data[o : o + min(128, n)]) for o, n in zip(frames.offset, frames.cap_len, strict=True)
    ]
    assert [g[8:] for g in got] == want  # 151 datagrams, in order: segmentation kept the boundaries
    assert broker.status()["destinations"]["t"]["packets"] == 151
    broker.close()


def test_a_refused_send_is_counted_not_raised() -> None:
    sender = Sender(
        Destination(name="b", encap="vxlan", address="255.255.255.255")
    )  # no SO_BROADCAST: EACCES
    buf = np.zeros(300, np.uint8)
    result = sender.send(buf, np.array([0, 100, 200]), np.array([100, 100, 100]))
    assert (result.sent, result.failed) == (0, 3) and sender.errors == 3 and "denied" in sender.last_error
    sender.close()

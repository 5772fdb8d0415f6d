"""Real Ethernet/IPv4/TCP|UDP frames with chosen payloads, decoded by the real decoder, for parser tests.

``Conversation`` keeps TCP sequence numbers per direction; ``frames_batch`` packs frames into a
:class:`FrameBatch`; ``parse_frames`` runs decode + :class:`RequestParser` and returns the records.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

from cloudtap.capture.frames import FrameBatch
from cloudtap.decode import decode_frames
from cloudtap.l7 import RequestConfig, RequestParser

MS = 1_000_000
T0 = 1_700_000_000 * 1_000_000_000


def _ip(text: str) -> bytes:
    return bytes(int(x) for x in text.split("."))


def frame(src: str, dst: str, sport: int, dport: int, payload: bytes, tcp: bool = True, seq: int = 0,
          ack: int = 0, flags: int = 0x18) -> bytes:  # fmt: skip
    """One Ethernet frame; TCP with PSH/ACK by default, or UDP."""
    if tcp:
        l4 = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack, 5 << 4, flags, 65535, 0, 0)
        proto = 6
    else:
        l4 = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0)
        proto = 17
    total = 20 + len(l4) + len(payload)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 1, 0, 64, proto, 0, _ip(src), _ip(dst))
    eth = b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02\x08\x00"
    return eth + ip + l4 + payload


def frames_batch(frames: list[tuple[int, bytes]], snaplen: int | None = None) -> FrameBatch:
    """(ts_ns, frame bytes) pairs as one batch, each frame cut to ``snaplen`` when given."""
    cut = [f if snaplen is None else f[:snaplen] for _, f in frames]
    offsets = np.cumsum([0] + [len(f) for f in cut[:-1]]).astype(np.int64)
    n = len(frames)
    return FrameBatch(
        data=np.frombuffer(b"".join(cut), np.uint8).copy(),
        offset=offsets,
        cap_len=np.array([len(f) for f in cut], np.uint32),
        wire_len=np.array([len(f) for _, f in frames], np.uint32),
        ts_ns=np.array([t for t, _ in frames], np.int64),
        linktype=np.ones(n, np.uint16),
        interface=np.zeros(n, np.uint16),
    )


@dataclass
class Conversation:
    """A TCP (or UDP) conversation between a client and a server; collects frames in time order."""

    client: str = "10.0.0.1"
    server: str = "10.0.0.2"
    cport: int = 40000
    sport: int = 80
    tcp: bool = True
    frames: list[tuple[int, bytes]] = field(default_factory=list)
    seq: list[int] = field(default_factory=lambda: [1000, 5000])

    def send(self, t_ns: int, payload: bytes, from_client: bool = True, advance: bool = True) -> None:
        d = 0 if from_client else 1
        src, dst = (self.client, self.server) if from_client else (self.server, self.client)
        sp, dp = (self.cport, self.sport) if from_client else (self.sport, self.cport)
        self.frames.append((t_ns, frame(src, dst, sp, dp, payload, self.tcp, self.seq[d], self.seq[1 - d])))
        if advance:
            self.seq[d] += len(payload)

    def request(self, t_ns: int, payload: bytes) -> None:
        self.send(t_ns, payload, True)

    def response(self, t_ns: int, payload: bytes) -> None:
        self.send(t_ns, payload, False)


def parse_frames(frames: list[tuple[int, bytes]], config: RequestConfig | None = None,
                 snaplen: int | None = None) -> tuple[np.ndarray, dict[str, int]]:  # fmt: skip
    """Decode and parse ``frames`` (sorted by time) to (records ordered by request time, stats)."""
    frames = sorted(frames, key=lambda f: f[0])
    parser = RequestParser(config)
    batch = frames_batch(frames, snaplen)
    parser.add(batch, decode_frames(batch))
    parser.flush()
    records = parser.records()
    return records[np.argsort(records["req_ns"], kind="stable")], parser.stats


def texts(records: np.ndarray, name: str) -> list[str]:
    """A string field of every record."""
    return [v.decode("latin-1") for v in records[name].tolist()]

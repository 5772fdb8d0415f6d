"""Build ``PACKET_DTYPE`` rows by hand for meter tests.

Times are ns (use ``S``, ``MS``, ``US``). Addresses are text (IPv4 or IPv6). TCP flags are a string of
letters (``"S"``, ``"SA"``, ``"A"``, ``"PA"``, ``"FA"``, ``"R"``, ``"RA"``) or the flags byte.
Every builder returns a one-row array; :func:`stack` joins them into a stream.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from cloudtap.meter import Meter, MeterConfig, aggregate_edges
from cloudtap.meter._state import EDGE_DELTA_DTYPE
from cloudtap.meter.edges import EDGE_KEYS
from cloudtap.schema.address import from_text as _from_text
from cloudtap.schema.flow import FLOW_DTYPE
from cloudtap.schema.packet import (
    FLAG_L4,
    PACKET_DTYPE,
    PROTO_ICMP,
    PROTO_ICMPV6,
    PROTO_TCP,
    PROTO_UDP,
    STATUS_OK,
)

S = 1_000_000_000
MS = 1_000_000
US = 1_000
#: A realistic epoch on a minute boundary (2023-11-14 22:13:00 UTC), so record periods start at T0.
T0 = 1_699_999_980 * S

_FLAG_BITS = {"F": 0x01, "S": 0x02, "R": 0x04, "P": 0x08, "A": 0x10, "U": 0x20, "E": 0x40, "C": 0x80}
_ETH = 14
_NAMES = PACKET_DTYPE.names


@lru_cache(maxsize=4096)
def from_text(text: str) -> tuple[int, int]:
    """Address text to (hi, lo), cached (streams repeat a few hosts)."""
    return _from_text(text)


def tcp_flags(flags: str | int) -> int:
    """Flags byte from letters (``"SA"``) or pass an int through."""
    if isinstance(flags, int):
        return flags
    value = 0
    for letter in flags:
        value |= _FLAG_BITS[letter]
    return value


def packet(
    ts: int,
    src: str,
    sport: int,
    dst: str,
    dport: int,
    proto: int,
    *,
    payload: int = 0,
    l4_header: int = 0,
    ip_len: int | None = None,
    wire_len: int | None = None,
    status: int = STATUS_OK,
    flags: int = FLAG_L4,
    vlan: int = 0,
    interface: int = 0,
    tunnel_id: int = 0,
    tunnel_type: int = 0,
    tunnel_src: str | None = None,
    tunnel_dst: str | None = None,
    src_mac: int = 0,
    dst_mac: int = 0,
    tcp_flag_bits: int = 0,
    seq: int = 0,
    ack: int = 0,
    win: int = 0,
    icmp_type: int = 0,
) -> np.ndarray:
    """One decoded packet; lengths default to a plain Ethernet frame with no IP options."""
    src_hi, src_lo = from_text(src)
    dst_hi, dst_lo = from_text(dst)
    ip_ver = 6 if ":" in src else 4
    if ip_len is None:
        ip_len = (40 if ip_ver == 6 else 20) + l4_header + payload
    if wire_len is None:
        wire_len = ip_len + _ETH
    tsrc = from_text(tunnel_src) if tunnel_src is not None else (0, 0)
    tdst = from_text(tunnel_dst) if tunnel_dst is not None else (0, 0)
    values = {
        "ts_ns": ts, "src_hi": src_hi, "src_lo": src_lo, "dst_hi": dst_hi, "dst_lo": dst_lo,
        "tunnel_src_hi": tsrc[0], "tunnel_src_lo": tsrc[1],
        "tunnel_dst_hi": tdst[0], "tunnel_dst_lo": tdst[1],
        "src_mac": src_mac, "dst_mac": dst_mac, "tcp_seq": seq & 0xFFFF_FFFF, "tcp_ack": ack & 0xFFFF_FFFF,
        "tunnel_id": tunnel_id, "wire_len": wire_len, "cap_len": min(wire_len, 128), "ip_len": ip_len,
        "payload_len": payload, "frag_id": 0, "frame_index": 0, "sport": sport, "dport": dport, "vlan": vlan,
        "interface": interface,
        "tcp_win": win, "frag_offset": 0, "l3_offset": _ETH, "l4_offset": _ETH + (40 if ip_ver == 6 else 20),
        "proto": proto, "ip_ver": ip_ver, "tcp_flags": tcp_flag_bits, "tunnel_type": tunnel_type,
        "tunnel_depth": 1 if tunnel_type else 0, "status": status, "flags": flags, "icmp_type": icmp_type,
    }  # fmt: skip
    return np.array([tuple(values.get(name, 0) for name in _NAMES)], PACKET_DTYPE)


def tcp(
    ts: int,
    src: str,
    sport: int,
    dst: str,
    dport: int,
    flags: str | int = "A",
    seq: int = 0,
    ack: int = 0,
    payload: int = 0,
    win: int = 65535,
    **kw: object,
) -> np.ndarray:
    """One TCP segment (20-byte header)."""
    return packet(
        ts, src, sport, dst, dport, PROTO_TCP, payload=payload, l4_header=20,
        tcp_flag_bits=tcp_flags(flags), seq=seq, ack=ack, win=win, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def udp(ts: int, src: str, sport: int, dst: str, dport: int, payload: int = 0, **kw: object) -> np.ndarray:
    """One UDP datagram."""
    return packet(ts, src, sport, dst, dport, PROTO_UDP, payload=payload, l4_header=8, **kw)  # type: ignore[arg-type]


def icmp(
    ts: int,
    src: str,
    dst: str,
    icmp_type: int,
    ident: int = 0,
    code: int = 0,
    payload: int = 56,
    **kw: object,
) -> np.ndarray:
    """One ICMP (or ICMPv6 for IPv6 addresses) message, with the decoder's port convention.

    Echo request/reply (8/0, ICMPv6 128/129) use the identifier as both ports; other messages have
    source port 0 and destination port ``type << 8 | code``.
    """
    v6 = ":" in src
    echo = icmp_type in ((128, 129) if v6 else (8, 0))
    sport, dport = (ident, ident) if echo else (0, (icmp_type << 8) | code)
    proto = PROTO_ICMPV6 if v6 else PROTO_ICMP
    return packet(
        ts, src, sport, dst, dport, proto, payload=payload, l4_header=8, icmp_type=icmp_type, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def stack(*rows: np.ndarray) -> np.ndarray:
    """Join rows (or arrays of rows) into one packet stream, in the given order."""
    out = np.zeros(sum(len(r) for r in rows), PACKET_DTYPE)
    i = 0
    for r in rows:  # np.concatenate promotes structured dtypes pairwise: slow for many rows
        out[i : i + len(r)] = r
        i += len(r)
    return out


# -- running the meter ------------------------------------------------------------------------------


def run_meter(
    packets: np.ndarray, config: MeterConfig | None = None, batches: list[int] | None = None
) -> tuple[np.ndarray, np.ndarray, Meter]:
    """Feed ``packets`` to a :class:`Meter` (in ``batches`` of these sizes, else at once), flush.

    Returns:
        (records, edge deltas, the meter) with everything the sinks received, in order.
    """
    records: list[np.ndarray] = []
    edges: list[np.ndarray] = []
    meter = Meter(config or MeterConfig(), on_records=records.append, on_edges=edges.append)
    i = 0
    for size in batches or [len(packets)]:
        meter.add(packets[i : i + size])
        i += size
    meter.add(packets[i:])
    meter.flush()
    flows = np.concatenate(records) if records else np.zeros(0, FLOW_DTYPE)
    deltas = np.concatenate(edges) if edges else np.zeros(0, EDGE_DELTA_DTYPE)
    return flows, deltas, meter


def record_key(rec: np.void, skip: tuple[str, ...] = ("flow_id",)) -> tuple[Any, ...]:
    """A record as a sortable tuple of its fields (minus ``skip``)."""
    return tuple(rec[name].item() for name in FLOW_DTYPE.names if name not in skip)


def assert_same_records(got: np.ndarray, want: np.ndarray) -> None:
    """Equal as multisets on every field; flow ids equal up to a one-to-one renaming."""
    assert len(got) == len(want), f"{len(got)} records, want {len(want)}"
    got_sorted = sorted(got, key=record_key)
    want_sorted = sorted(want, key=record_key)
    ids: dict[int, int] = {}
    for g, w in zip(got_sorted, want_sorted, strict=True):
        if record_key(g) != record_key(w):
            diff = {n: (g[n].item(), w[n].item()) for n in FLOW_DTYPE.names if g[n] != w[n]}
            raise AssertionError(f"record differs (got, want): {diff}")
        assert ids.setdefault(int(g["flow_id"]), int(w["flow_id"])) == int(w["flow_id"]), "flow ids disagree"
    assert len(set(ids.values())) == len(ids), "two flows of one got one flow id"


def assert_same_edges(got: np.ndarray, want: np.ndarray, interval_s: float = 1.0) -> None:
    """Edge deltas equal once aggregated per ``interval_s`` (RTT sums to float rounding)."""
    a = aggregate_edges(got, interval_s).to_pylist()
    b = aggregate_edges(want, interval_s).to_pylist()
    assert len(a) == len(b), f"{len(a)} edges, want {len(b)}"

    def key(row: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(row[k] for k in EDGE_KEYS)

    for x, y in zip(sorted(a, key=key), sorted(b, key=key), strict=True):
        rtt_x, rtt_y = x.pop("rtt_sum_us"), y.pop("rtt_sum_us")
        assert x == y
        assert abs(rtt_x - rtt_y) <= 1e-9 * max(1.0, abs(rtt_y)), (rtt_x, rtt_y)


# -- random traffic ---------------------------------------------------------------------------------
# A seeded mix of TCP conversations (handshakes, SYN retries, data with retransmissions, spurious
# retransmissions, reordering, duplicate ACKs and fast retransmissions, zero windows and probes,
# keep-alives, FIN/RST closes, port reuse, SYN-only, refused, half-open, mid-stream, SYN-ACK first),
# UDP exchanges, ICMP echo and errors, VLAN, tunnel and capture-interface variants, rows the meter
# does not meter, and a few timestamps out of order. Used to hold the meter to the reference.


def _mac(host: str) -> int:
    """A locally administered MAC derived from the host address."""
    return 0x020000000000 | (from_text(host)[1] & 0xFFFFFFFF)


class _Traffic:
    def __init__(self, rng: np.random.Generator, t0: int, span_ns: int) -> None:
        self.rng = rng
        self.t0 = t0
        self.span = span_ns
        self.rows: list[np.ndarray] = []
        self.used: set[tuple[str, int, str, int, int]] = set()

    # helpers ------------------------------------------------------------------------------------
    def u(self, lo: float, hi: float) -> float:
        return float(self.rng.uniform(lo, hi))

    def p(self, prob: float) -> bool:
        return bool(self.rng.random() < prob)

    def think(self) -> int:
        """A gap between exchanges: mostly short, sometimes past an idle timeout."""
        r = self.rng.random()
        if r < 0.7:
            return int(self.u(0.2, 50) * MS)
        if r < 0.9:
            return int(self.u(0.5, 8) * S)
        return int(self.u(10, 200) * S)

    def endpoints(self, v6: bool, server_port: int) -> tuple[str, int, str, int]:
        rng = self.rng
        while True:
            if v6:
                c, s = f"fd00::c:{rng.integers(1, 12):x}", f"fd00::5:{rng.integers(1, 6):x}"
            else:
                c, s = f"10.1.0.{rng.integers(1, 40)}", f"10.2.0.{rng.integers(1, 12)}"
            r = rng.random()
            cport = int(rng.integers(32768, 61000)) if r < 0.85 else int(rng.integers(1024, 32768))
            if (c, cport, s, server_port) not in self.used:
                self.used.add((c, cport, s, server_port))
                return c, cport, s, server_port

    # TCP ----------------------------------------------------------------------------------------
    def tcp_session(
        self, t: int, c: str, cp: int, s: str, sp: int, kind: str, link: dict[str, object]
    ) -> int:
        rng = self.rng
        out = self.rows
        isn = [int(rng.integers(1, 1 << 32)), int(rng.integers(1, 1 << 32))]
        if self.p(0.1):
            isn[0] = (1 << 32) - int(rng.integers(1, 3000))  # wraps during the data
        nxt = [isn[0], isn[1]]
        win = [65535, 65535]
        rtt_s = int(self.u(0.05, 20) * MS)
        rtt_c = int(self.u(0.02, 2) * MS)
        ends = [(c, cp, s, sp), (s, sp, c, cp)]

        def seg(t_: int, d: int, flags: str, payload: int = 0, seq: int | None = None,
                ack: int | None = None, w: int | None = None) -> None:  # fmt: skip
            a, ap, b, bp = ends[d]
            out.append(
                tcp(t_, a, ap, b, bp, flags, nxt[d] if seq is None else seq,
                    nxt[1 - d] if ack is None else ack, payload, win[d] if w is None else w,
                    **{**link, "src_mac": _mac(a)})  # type: ignore[arg-type]
            )  # fmt: skip

        # handshake
        if kind in ("full", "syn_only", "refused", "half_open"):
            tries = 1 if self.p(0.75) else int(rng.integers(2, 4))
            for i in range(tries):
                seg(t, 0, "S", seq=isn[0] - 1 & 0xFFFF_FFFF, ack=0)
                if i < tries - 1:
                    t += (1 << i) * S + int(self.u(0, 5) * MS)
            if kind == "syn_only":
                return t
            t += rtt_s
            if kind == "refused":
                seg(t, 1, "RA", seq=0, ack=isn[0])
                return t
            seg(t, 1, "SA", seq=isn[1] - 1 & 0xFFFF_FFFF, ack=isn[0])
            if kind == "half_open":
                for i in range(int(rng.integers(0, 3))):
                    t += (1 << i) * S
                    seg(t, 1, "SA", seq=isn[1] - 1 & 0xFFFF_FFFF, ack=isn[0])
                if self.p(0.3):
                    t += int(self.u(1, 3) * S)
                    seg(t, 0, "R", seq=isn[0], ack=0)
                return t
            if self.p(0.1):  # the SYN-ACK is retransmitted before the ACK
                t += int(self.u(0.1, 2) * MS)
                seg(t, 1, "SA", seq=isn[1] - 1 & 0xFFFF_FFFF, ack=isn[0])
            t += rtt_c
            seg(t, 0, "A")
        elif kind == "synack_first":
            seg(t, 1, "SA", seq=isn[1] - 1 & 0xFFFF_FFFF, ack=isn[0])
            t += rtt_c
            seg(t, 0, "A")
        # data
        first_mid = kind == "midstream"
        for _ in range(int(rng.geometric(0.25))):
            t += self.think() if not first_mid else 0
            d = 0 if (not first_mid or self.p(0.6)) else 1
            first_mid = False
            for direction in (d, 1 - d):
                t = self._burst(t, direction, nxt, win, seg, rtt_s + rtt_c)
            if self.p(0.05):  # keep-alive after a quiet spell
                t += int(self.u(5, 50) * S)
                seg(t, 0, "A", payload=int(rng.integers(0, 2)), seq=nxt[0] - 1 & 0xFFFF_FFFF)
                t += rtt_s
                seg(t, 1, "A")
        # close
        r = rng.random()
        t += int(self.u(0.1, 20) * MS)
        if r < 0.45:
            first = 0 if self.p(0.7) else 1
            seg(t, first, "FA")
            if self.p(0.1):  # FIN retransmitted
                t += int(self.u(0.5, 300) * MS)
                seg(t, first, "FA")
            nxt[first] = nxt[first] + 1 & 0xFFFF_FFFF
            t += rtt_s
            seg(t, 1 - first, "FA")
            nxt[1 - first] = nxt[1 - first] + 1 & 0xFFFF_FFFF
            t += rtt_c
            seg(t, first, "A")
        elif r < 0.55:
            seg(t, 0, "FA")
            nxt[0] = nxt[0] + 1 & 0xFFFF_FFFF
            t += rtt_s
            seg(t, 1, "A")
        elif r < 0.65:
            seg(t, 0, "RA")
        elif r < 0.75:
            seg(t, 1, "RA")
            if self.p(0.3):
                t += int(self.u(0.1, 1) * MS)
                seg(t, 0, "A")  # a straggler after the RST
        return t

    def _burst(self, t: int, d: int, nxt: list[int], win: list[int], seg: Any, rtt: int) -> int:
        """``d`` sends a few segments with trouble now and then; the peer ACKs."""
        rng = self.rng
        sizes = [int(rng.integers(1, 1449)) for _ in range(int(rng.integers(1, 7)))]
        starts = []
        for size in sizes:
            starts.append(nxt[d])
            nxt[d] = nxt[d] + size & 0xFFFF_FFFF
        gap = int(self.u(5, 200)) * US
        times = [t + i * gap for i in range(len(sizes))]
        event = rng.random()
        lost = -1
        if event < 0.08 and len(sizes) >= 3:  # reorder: a later segment is seen first
            i = int(rng.integers(0, len(sizes) - 1))
            times[i], times[i + 1] = times[i + 1], times[i]
        elif event < 0.16 and len(sizes) >= 2:  # lost before the capture point: dup ACKs, fast retransmit
            lost = int(rng.integers(0, len(sizes) - 1))
        for i, (size, start, ts) in enumerate(zip(sizes, starts, times, strict=True)):
            if i != lost:
                seg(ts, d, "PA" if i == len(sizes) - 1 else "A", payload=size, seq=start)
        t = max(times) + rtt // 2 + 1
        if lost >= 0:
            for _ in range(int(rng.integers(1, 5))):
                seg(t, 1 - d, "A", ack=starts[lost])
                t += int(self.u(0.01, 3) * MS)
            seg(t, d, "A", payload=sizes[lost], seq=starts[lost])
            t += rtt // 2 + 1
        if event > 0.92:  # zero window: the receiver stalls, the sender probes
            seg(t, 1 - d, "A", w=0)
            win[1 - d] = 0
            for _ in range(int(rng.integers(1, 4))):
                t += int(self.u(50, 400) * MS)
                seg(t, d, "A", payload=1, seq=nxt[d])
                t += rtt // 2 + 1
                seg(t, 1 - d, "A", w=0)
            win[1 - d] = 65535
            t += int(self.u(1, 100) * MS)
            seg(t, 1 - d, "A")  # window update
            t += 1000
        else:
            seg(t, 1 - d, "A")
        if 0.85 < event <= 0.92:  # a timeout retransmission of data already ACKed (spurious)
            t += int(self.u(0.05, 300) * MS)
            i = int(rng.integers(0, len(sizes)))
            seg(t, d, "A", payload=sizes[i], seq=starts[i])
            t += rtt // 2 + 1
            seg(t, 1 - d, "A")
        elif 0.80 < event <= 0.85:  # retransmission of unacknowledged data after an RTO
            size = int(rng.integers(1, 1449))
            start = nxt[d]
            nxt[d] = nxt[d] + size & 0xFFFF_FFFF
            seg(t, d, "PA", payload=size, seq=start)
            t += int(self.u(0.5, 400) * MS)
            seg(t, d, "PA", payload=size, seq=start)
            t += rtt // 2 + 1
            seg(t, 1 - d, "A")
        return t

    # UDP / ICMP ---------------------------------------------------------------------------------
    def udp_session(self, t: int, c: str, cp: int, s: str, sp: int, link: dict[str, object]) -> int:
        rng = self.rng
        server_first = self.p(0.1)
        for _ in range(int(rng.geometric(0.3))):
            t += self.think()
            pair = [(c, cp, s, sp), (s, sp, c, cp)]
            if server_first:
                pair.reverse()
                server_first = False
            for a, ap, b, bp in pair if self.p(0.85) else pair[:1]:
                self.rows.append(udp(t, a, ap, b, bp, int(rng.integers(0, 1400)),
                                     **{**link, "src_mac": _mac(a)}))  # fmt: skip
                t += int(self.u(0.05, 5) * MS)
        return t

    def icmp_session(self, t: int, c: str, s: str, link: dict[str, object]) -> int:
        rng = self.rng
        v6 = ":" in c
        req, rep = (128, 129) if v6 else (8, 0)
        ident = int(rng.integers(0, 65536))
        if self.p(0.15):  # an error message, not echo
            self.rows.append(icmp(t, s, c, 1 if v6 else 3, code=3, **link))  # type: ignore[arg-type]
            return t
        reply_first = self.p(0.1)
        for _ in range(int(rng.integers(1, 8))):
            if not reply_first:
                self.rows.append(icmp(t, c, s, req, ident, **link))  # type: ignore[arg-type]
            reply_first = False
            if self.p(0.9):
                self.rows.append(icmp(t + int(self.u(0.05, 3) * MS), s, c, rep, ident, **link))  # type: ignore[arg-type]
            t += S if self.p(0.9) else int(self.u(20, 90) * S)
        return t

    # noise --------------------------------------------------------------------------------------
    def noise(self, t: int) -> None:
        r = self.rng.random()
        if r < 0.4:  # ARP-like: not IP
            row = udp(t, "10.9.9.1", 0, "10.9.9.2", 0)
            row["ip_ver"] = 0
            row["status"] = 1
            row["proto"] = 0
        elif r < 0.6:
            row = udp(t, "10.9.9.1", 7, "10.9.9.2", 7, status=3)  # malformed
        else:  # truncated inside the TCP header: IP lengths, ports 0, no L4 fields
            row = packet(t, "10.1.0.1", 0, "10.2.0.1", 0, PROTO_TCP, payload=500, l4_header=20,
                         status=2, flags=0)  # fmt: skip
        self.rows.append(row)


def random_traffic(seed: int, sessions: int = 300, span_s: float = 400.0) -> np.ndarray:
    """A seeded random packet stream (``PACKET_DTYPE``), mostly in time order (see module notes)."""
    rng = np.random.default_rng(seed)
    tr = _Traffic(rng, T0 + int(rng.integers(0, S)), int(span_s * S))
    for _ in range(sessions):
        t = tr.t0 + int(rng.integers(0, tr.span)) // US * US
        v6 = tr.p(0.15)
        link: dict[str, object] = {}
        r = rng.random()
        if r < 0.1:
            link = {"vlan": int(rng.choice([100, 200]))}
        elif r < 0.2:
            link = {"tunnel_id": int(rng.choice([5001, 5002])), "tunnel_type": 1,
                    "tunnel_src": "192.168.0.1", "tunnel_dst": "192.168.0.2"}  # fmt: skip
        link["interface"] = int(rng.choice([0, 0, 0, 1, 2]))  # the observation point
        kind_r = rng.random()
        if kind_r < 0.6:
            kind = str(rng.choice(["full", "syn_only", "refused", "half_open", "midstream", "synack_first"],
                                  p=[0.55, 0.1, 0.08, 0.07, 0.12, 0.08]))  # fmt: skip
            sp = int(rng.choice([80, 443, 5432, 8080, 9000, 40000]))
            c, cp, s, _ = tr.endpoints(v6, sp)
            end = tr.tcp_session(t, c, cp, s, sp, kind, link)
            if kind in ("full", "refused") and tr.p(0.2):  # the same 5-tuple again, soon
                tr.tcp_session(end + int(tr.u(0.05, 6) * S), c, cp, s, sp, "full", link)
        elif kind_r < 0.85:
            sp = int(rng.choice([53, 123, 5000, 50000]))
            c, cp, s, _ = tr.endpoints(v6, sp)
            tr.udp_session(t, c, cp, s, sp, link)
        elif kind_r < 0.95:
            c, _, s, _ = tr.endpoints(v6, 0)
            tr.icmp_session(t, c, s, link)
        else:
            tr.noise(t)
    packets = stack(*tr.rows)
    packets = packets[np.argsort(packets["ts_ns"], kind="stable")]
    # A few rows swapped with their neighbour: timestamps that go back in time.
    n = len(packets)
    for i in rng.choice(max(n - 1, 1), size=n // 200, replace=False):
        packets[[i, i + 1]] = packets[[i + 1, i]]
    # A few rows seen at another observation point (another capture interface).
    moved = rng.choice(n, size=n // 50, replace=False)
    packets["interface"][moved] = (packets["interface"][moved] + 1) % 3
    return packets

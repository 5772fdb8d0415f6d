"""Shared helpers for the oracle tests: golden file loading and cloudtap flow aggregation.

Every oracle is compared per *key*: protocol plus the unordered pair of (innermost IP, port)
endpoints, side ``a`` being the smaller endpoint. Non-echo ICMP collapses to one key per IP pair
with both ports -1. cloudtap records are summed over flow_id, VLAN, tunnel and port reuse. The
rules are documented in ``docs/oracles.md``; ``scripts/regen_golden.py`` applies the same ones.
"""

from __future__ import annotations

import csv
import gzip
import io
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PCAPS = REPO / ".." / "shared" / "pcaps"
GOLDEN = REPO / "tests" / "golden"

ICMP_OTHER_PORT = -1
_ECHO_PROTOS = (1, 58)

Key = tuple[int, str, int, str, int]


def golden_files(oracle: str) -> list[Path]:
    """Golden files of one oracle (``tshark``, ``argus``, ``deepflow``), sorted."""
    folder = GOLDEN / oracle
    return sorted([*folder.glob("*.csv"), *folder.glob("*.csv.gz")])


def capture_of(golden: Path) -> str:
    """Manifest path of the capture a golden file describes."""
    name = golden.name.removesuffix(".gz").removesuffix(".csv")
    return name.replace("__", "/")


def read_golden(golden: Path) -> list[dict[str, str]]:
    """Rows of a golden CSV (plain or gzipped)."""
    raw = golden.read_bytes()
    if golden.suffix == ".gz":
        raw = gzip.decompress(raw)
    return list(csv.DictReader(io.StringIO(raw.decode())))


def _addr_sort(ip: str, port: int) -> tuple[int, int, int]:
    a = ipaddress.ip_address(ip)
    return (a.version, int(a), port)


def flow_key(proto: int, src: str, sport: int, dst: str, dport: int) -> tuple[Key, bool]:
    """Canonical key and whether (src, sport) is side ``a``.

    Non-echo ICMP (client port != server port: 0 vs type<<8|code) becomes one key per IP pair.
    """
    src, dst = str(ipaddress.ip_address(src)), str(ipaddress.ip_address(dst))
    if proto in _ECHO_PROTOS and sport != dport:
        sport = dport = ICMP_OTHER_PORT
    if _addr_sort(src, sport) <= _addr_sort(dst, dport):
        return (proto, src, sport, dst, dport), True
    return (proto, dst, dport, src, sport), False


def golden_key(row: dict[str, str]) -> Key:
    """Key of a golden row (already canonical)."""
    return (int(row["proto"]), row["ip_a"], int(row["port_a"]), row["ip_b"], int(row["port_b"]))


def key_text(key: Key) -> str:
    """Readable key: ``6 10.0.0.1:61541 <> 81.218.72.15:80``."""
    proto, ia, pa, ib, pb = key
    return f"{proto} {ia}:{pa} <> {ib}:{pb}"


@dataclass
class Totals:
    """cloudtap counters of one key, in a/b orientation (index 0 = a->b)."""

    packets: list[int] = field(default_factory=lambda: [0, 0])
    bytes: list[int] = field(default_factory=lambda: [0, 0])
    l2_bytes: list[int] = field(default_factory=lambda: [0, 0])
    retrans: list[int] = field(default_factory=lambda: [0, 0])
    zero_window: list[int] = field(default_factory=lambda: [0, 0])
    ooo: list[int] = field(default_factory=lambda: [0, 0])
    syn_count: int = 0
    synack_count: int = 0
    first_ns: int | None = None
    last_ns: int | None = None
    records: int = 0
    #: per flow_id: (client is side a, rtt_client_us, rtt_server_us) with -1 = unknown
    rtts: dict[int, tuple[bool, float, float]] = field(default_factory=dict)


def _pair(row: dict, name: str, client_is_a: bool) -> tuple[int, int]:
    c2s, s2c = int(row[f"{name}_c2s"]), int(row[f"{name}_s2c"])
    return (c2s, s2c) if client_is_a else (s2c, c2s)


def aggregate_records(records: Iterable[dict]) -> dict[Key, Totals]:
    """Sum cloudtap flow records (``MeterResult.to_arrow().to_pylist()``) per key."""
    out: dict[Key, Totals] = {}
    for r in records:
        key, client_is_a = flow_key(
            int(r["proto"]), r["client_ip"], int(r["client_port"]), r["server_ip"], int(r["server_port"])
        )
        t = out.setdefault(key, Totals())
        t.records += 1
        for name in ("packets", "bytes", "l2_bytes", "retrans", "zero_window", "ooo"):
            ab, ba = _pair(r, name, client_is_a)
            acc = getattr(t, name)
            acc[0] += ab
            acc[1] += ba
        t.syn_count += int(r["syn_count"])
        t.synack_count += int(r["synack_count"])
        first, last = int(r["first_ns"]), int(r["last_ns"])
        t.first_ns = first if t.first_ns is None else min(t.first_ns, first)
        t.last_ns = last if t.last_ns is None else max(t.last_ns, last)
        fid = int(r["flow_id"])
        prev = t.rtts.get(fid, (client_is_a, -1.0, -1.0))
        t.rtts[fid] = (
            client_is_a,
            max(prev[1], float(r["rtt_client_us"])),
            max(prev[2], float(r["rtt_server_us"])),
        )
    return out


def known_rtts(t: Totals, which: str) -> list[float]:
    """Known (>= 0) handshake RTTs of a key, one per flow: ``which`` is ``client`` or ``server``."""
    idx = 1 if which == "client" else 2
    return [v[idx] for v in t.rtts.values() if v[idx] >= 0]


class Mismatches:
    """Collects per-check mismatches of one capture, honouring its documented exceptions.

    An exception is keyed ``(capture, check)`` (the whole check of that capture) or
    ``(capture, check, key_text(key))`` (one flow key only); its value is the reason. An exception
    that no longer matches any mismatch is reported as stale, so the lists stay minimal.
    """

    def __init__(self, capture: str, exceptions: dict[tuple[str, ...], str]) -> None:
        self.capture = capture
        self.allowed = {e[1:] for e in exceptions if e[0] == capture}
        self.found: list[tuple[str, str | None, str]] = []

    def add(self, check: str, message: str, key: Key | None = None) -> None:
        """Record one difference; ``key`` (a flow key) is prefixed to the message."""
        text = key_text(key) if key is not None else None
        self.found.append((check, text, f"{text}: {message}" if text else message))

    def _excused_by(self, check: str, key: str | None) -> tuple[str, ...] | None:
        if key is not None and (check, key) in self.allowed:
            return (check, key)
        if (check,) in self.allowed:
            return (check,)
        return None

    def report(self) -> tuple[list[str], list[tuple[str, ...]]]:
        """(unexpected mismatch lines, stale exceptions that no longer differ)."""
        used = set()
        bad = []
        for check, key, msg in self.found:
            excuse = self._excused_by(check, key)
            if excuse is None:
                bad.append(f"[{check}] {msg}")
            else:
                used.add(excuse)
        return bad[:40], sorted(self.allowed - used)

    def assert_clean(self) -> None:
        bad, stale = self.report()
        lines = []
        if bad:
            lines.append(f"{self.capture}: cloudtap differs from the oracle:")
            lines += ["  " + b for b in bad]
        if stale:
            lines.append(f"{self.capture}: documented exceptions no longer needed (remove them): {stale}")
        assert not lines, "\n".join(lines)

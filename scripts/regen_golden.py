#!/usr/bin/env python3
"""Regenerate the oracle golden files under ``tests/golden`` from the public captures.

For every readable pcap/pcapng in ``MANIFEST.csv`` this runs tshark once (``-T fields``, every
occurrence of each field), picks the innermost IP packet of each frame the way cloudtap defines it
(see ``docs/oracles.md``), and aggregates the packets into per-flow rows keyed by protocol and the
unordered pair of (IP, port) endpoints. Files with TCP flows are also run through Argus
(``argus`` + ``racluster``) for packet counts and handshake RTTs. DeepFlow's PerfData ``.result``
files are reduced to their final snapshot per pcap. Output is deterministic: re-running on the same
captures with the same tool versions gives byte-identical files.

Usage::

    python scripts/regen_golden.py --pcaps ../shared/pcaps --out tests/golden
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import ipaddress
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

# --- tshark ------------------------------------------------------------------------------------

TSHARK_OPTS = (
    "-n",
    "-o", "ip.defragment:FALSE",
    "-o", "ipv6.defragment:FALSE",
    "-o", "tcp.analyze_sequence_numbers:TRUE",
    "-d", "udp.port==8472,vxlan",
    "-d", "udp.port==4789,vxlan",
    "-d", "udp.port==6081,geneve",
)  # fmt: skip
#: UDP tunnels tshark decodes by default, by their tokens, and the ports cloudtap recognises them on
#: ("dst": destination port only, "any": either port); see docs/flow-semantics.md.
_UDP_TUNNELS = {"gtp": ((2152,), "any"), "teredo": ((3544,), "any"), "gre": ((4754,), "dst"),
                "mpls": ((6635,), "dst")}  # fmt: skip

FIELDS = (
    "frame.number",
    "frame.time_epoch",
    "frame.len",
    "frame.protocols",
    "ip.src",
    "ip.dst",
    "ip.proto",
    "ip.len",
    "ip.id",
    "ip.flags.mf",
    "ip.frag_offset",
    "ipv6.src",
    "ipv6.dst",
    "ipv6.nxt",
    "ipv6.plen",
    "ipv6.hopopts.nxt",
    "ipv6.routing.nxt",
    "ipv6.dstopts.nxt",
    "ipv6.fraghdr.nxt",
    "ipv6.fraghdr.offset",
    "ipv6.fraghdr.more",
    "ipv6.fraghdr.ident",
    "ipv6.opt.jumbo",
    "ah.next_header",
    "tcp.srcport",
    "tcp.dstport",
    "tcp.flags",
    "tcp.hdr_len",
    "tcp.urgent_pointer",
    "tcp.analysis.retransmission",
    "tcp.analysis.fast_retransmission",
    "tcp.analysis.spurious_retransmission",
    "tcp.analysis.keep_alive",
    "tcp.analysis.zero_window",
    "tcp.analysis.out_of_order",
    "udp.srcport",
    "udp.dstport",
    "udp.checksum",
    "sctp.srcport",
    "sctp.dstport",
    "sctp.checksum",
    "icmp.type",
    "icmp.code",
    "icmp.checksum",
    "icmp.ident",
    "icmp.seq",
    "icmpv6.type",
    "icmpv6.code",
    "icmpv6.checksum",
    "icmpv6.echo.identifier",
    "icmpv6.echo.sequence_number",
)
_COL = {name: i for i, name in enumerate(FIELDS)}

#: Tokens of frame.protocols allowed between a tunnel header and the inner IP header.
_TUNNEL_L2 = frozenset(
    {"eth", "ethertype", "vlan", "ieee8021ad", "ieee8021ah", "mpls", "pwethcw", "pwethheuristic",
     "erspan", "pppoes", "ppp", "vntag", "etag"}
)  # fmt: skip
#: IPv6 extension header tokens and the field holding their next-header value.
_TUNNEL_PORTS = {"vxlan": (4789, 8472), "geneve": (6081,)}
_EXT_NXT = {
    "ah": "ah.next_header",
    "ipv6.hopopts": "ipv6.hopopts.nxt",
    "ipv6.routing": "ipv6.routing.nxt",
    "ipv6.dstopts": "ipv6.dstopts.nxt",
    "ipv6.fraghdr": "ipv6.fraghdr.nxt",
}
#: L4 token -> the last field of its fixed header: present only when the whole header was captured
#: (TCP flags are used only then; ICMP is keyed only then, else with ports 0).
_L4_LAST = {"tcp": "tcp.urgent_pointer", "udp": "udp.checksum", "sctp": "sctp.checksum",
            "icmp": "icmp.checksum", "icmpv6": "icmpv6.checksum"}  # fmt: skip
_ECHO_LAST = {"icmp": "icmp.seq", "icmpv6": "icmpv6.echo.sequence_number"}
_ECHO = {1: (0, 8), 58: (128, 129)}
ICMP_OTHER_PORT = -1  #: both ports of the one aggregate key per IP pair for non-echo ICMP


@dataclass
class Packet:
    """One metered packet: the innermost IP header and its L4 key."""

    frame: int
    ts_ns: int
    frame_len: int
    ver: int
    src: str
    dst: str
    proto: int
    ip_len: int
    frag_key: tuple | None  # (ver, src, dst, proto, id) for fragments
    later_fragment: bool
    sport: int = 0
    dport: int = 0
    icmp_type: int = -1
    tcp_flags: int = -1
    retrans: bool = False
    zero_window: bool = False
    ooo: bool = False


def _occ(values: list[list[str]], name: str, index: int) -> str:
    """The ``index``-th occurrence of field ``name`` in one tshark row, or ''."""
    occ = values[_COL[name]]
    return occ[index] if index < len(occ) else ""


def _int(text: str, default: int = 0) -> int:
    if text == "":
        return default
    if text in ("True", "False"):
        return int(text == "True")
    if text[:2].lower() == "0x":
        return int(text, 16)
    return int(text)


def _is_ext(token: str) -> bool:
    """IPv6 extension headers and IPsec AH: skipped on the way to the upper-layer protocol."""
    return token.startswith("ipv6.") or token == "ah"


def innermost_ip(
    tokens: list[str],
    udp_dport: Callable[[int], int],
    udp_sport: Callable[[int], int] = lambda i: -1,
    is_fragment: Callable[[int], bool] = lambda i: False,
) -> int | None:
    """Index in ``tokens`` of the IP layer cloudtap meters, or None when the frame is not metered.

    VXLAN (UDP destination port 4789/8472), Geneve (6081), GRE (IP, PPP-carried IP, WCCP, TEB,
    MPLS, ERSPAN), GRE-in-UDP (4754), MPLS-in-UDP (6635), GTP-U (2152) and Teredo (3544) carrying
    IP, and IP-in-IP are decapsulated; everything else (ICMP quotes, AYIYA, NSH, sFlow samples...)
    ends the descent, and so does an IP fragment (cloudtap keys every fragment of a tunnel packet
    on the outer packet). A tunnel that carries Ethernet/MPLS whose payload is not IP makes the
    whole frame unmetered. ``udp_dport(i)`` / ``udp_sport(i)`` are the ports of the UDP layer at
    token index ``i``; ``is_fragment(i)`` tells whether the IP layer at token index ``i`` is a
    fragment.
    """
    ips = [i for i, t in enumerate(tokens) if t in ("ip", "ipv6")]
    if not ips:
        return None
    inner = ips[0]
    j = inner + 1
    n = len(tokens)
    while True:
        while j < n and _is_ext(tokens[j]):
            j += 1
        if j >= n or is_fragment(inner):
            return inner
        t = tokens[j]
        nxt = tokens[j + 1] if j + 1 < n else ""
        if t == "udp" and nxt in _UDP_TUNNELS:
            ports, side = _UDP_TUNNELS[nxt]
            if udp_dport(j) in ports or (side == "any" and udp_sport(j) in ports):
                t, j = nxt, j + 1  # GRE / MPLS in UDP continue as GRE / MPLS below
                nxt = tokens[j + 1] if j + 1 < n else ""
                if t in ("gtp", "teredo"):
                    if nxt in ("ip", "ipv6"):
                        inner, j = j + 1, j + 2
                        continue
                    return inner
                if t == "mpls":  # a label stack right after UDP: what is under it, as for GRE-MPLS
                    t, nxt, j = "gre", "mpls", j - 1
        if t in ("ip", "ipv6"):
            inner, j = j, j + 1
            continue
        l2_start = None
        if t == "gre":
            if nxt in ("ip", "ipv6"):
                inner, j = j + 1, j + 2
                continue
            if nxt == "ppp":
                if j + 2 < n and tokens[j + 2] in ("ip", "ipv6"):
                    inner, j = j + 2, j + 3
                    continue
                return inner
            if nxt in ("eth", "erspan", "mpls"):
                l2_start = j + 1
        elif t == "udp" and nxt in ("vxlan", "geneve") and udp_dport(j) in _TUNNEL_PORTS[nxt]:
            if j + 2 < n and tokens[j + 2] in ("ip", "ipv6"):  # Geneve carrying IP
                inner, j = j + 2, j + 3
                continue
            l2_start = j + 2
        if l2_start is None:
            return inner
        k = l2_start
        while k < n and tokens[k] in _TUNNEL_L2:
            k += 1
        if k < n and tokens[k] in ("ip", "ipv6"):
            inner, j = k, k + 1
            continue
        return None  # tunnel entered, no IP inside: not metered


def parse_row(values: list[list[str]]) -> Packet | None:
    """Turn one tshark row (fields split into occurrences) into the metered packet, if any."""
    tokens = values[_COL["frame.protocols"]][0].split(":") if values[_COL["frame.protocols"]] else []

    def udp_port(name: str) -> Callable[[int], int]:
        return lambda i: _int(_occ(values, name, tokens[:i].count("udp")), -1)

    def is_fragment(i: int) -> bool:
        """The IP layer at token ``i`` is a fragment (IPv4 MF/offset, or an IPv6 fragment header)."""
        if tokens[i] == "ip":
            occ = tokens[:i].count("ip")
            return bool(_int(_occ(values, "ip.flags.mf", occ)) or _int(_occ(values, "ip.frag_offset", occ)))
        j = i + 1
        while j < len(tokens) and _is_ext(tokens[j]):
            if tokens[j] == "ipv6.fraghdr":
                e = tokens[:j].count("ipv6.fraghdr")
                more = _int(_occ(values, "ipv6.fraghdr.more", e))
                return bool(more or _int(_occ(values, "ipv6.fraghdr.offset", e)))
            j += 1
        return False

    k = innermost_ip(tokens, udp_port("udp.dstport"), udp_port("udp.srcport"), is_fragment)
    if k is None:
        return None
    layer = tokens[k]
    occ = tokens[:k].count(layer)
    frame = _int(_occ(values, "frame.number", 0))
    ts_ns = int(Decimal(_occ(values, "frame.time_epoch", 0)) * 1_000_000_000)
    frame_len = _int(_occ(values, "frame.len", 0))
    j = k + 1
    exts = []
    while j < len(tokens) and _is_ext(tokens[j]):
        exts.append(j)
        j += 1
    l4 = tokens[j] if j < len(tokens) else ""
    if layer == "ip":
        src, dst = _occ(values, "ip.src", occ), _occ(values, "ip.dst", occ)
        if not src or not dst:
            return None
        ver = 4
        proto = _int(_occ(values, "ip.proto", occ), -1)
        ip_len = _int(_occ(values, "ip.len", occ))
        ident = _int(_occ(values, "ip.id", occ))
        mf = _int(_occ(values, "ip.flags.mf", occ))
        offset = _int(_occ(values, "ip.frag_offset", occ))
        is_frag = bool(mf or offset)
        for e in exts:  # only AH can follow an IPv4 header here
            proto = _int(_occ(values, _EXT_NXT["ah"], tokens[:e].count("ah")), proto)
    else:
        src, dst = _occ(values, "ipv6.src", occ), _occ(values, "ipv6.dst", occ)
        if not src or not dst:
            return None
        ver = 6
        proto = _int(_occ(values, "ipv6.nxt", occ), -1)
        plen = _int(_occ(values, "ipv6.plen", occ))
        if plen == 0:  # jumbogram (RFC 2675): the length is in the hop-by-hop Jumbo Payload option
            jumbo_occ = sum(1 for i in range(occ) if _int(_occ(values, "ipv6.plen", i)) == 0)
            plen = _int(_occ(values, "ipv6.opt.jumbo", jumbo_occ))
        ip_len = 40 + plen
        ident = mf = offset = 0
        is_frag = False
        for e in exts:
            name = tokens[e]
            if name not in _EXT_NXT:
                continue
            e_occ = tokens[:e].count(name)
            proto = _int(_occ(values, _EXT_NXT[name], e_occ), proto)
            if name == "ipv6.fraghdr":
                offset = _int(_occ(values, "ipv6.fraghdr.offset", e_occ))
                mf = _int(_occ(values, "ipv6.fraghdr.more", e_occ))
                ident = _int(_occ(values, "ipv6.fraghdr.ident", e_occ))
                is_frag = bool(mf or offset)
    src = str(ipaddress.ip_address(src))
    dst = str(ipaddress.ip_address(dst))
    pkt = Packet(
        frame=frame, ts_ns=ts_ns, frame_len=frame_len, ver=ver, src=src, dst=dst, proto=proto,
        ip_len=ip_len, frag_key=(ver, src, dst, proto, ident) if is_frag else None,
        later_fragment=offset > 0,
    )  # fmt: skip
    if pkt.later_fragment:
        return pkt
    l4_occ = tokens[:j].count(l4)
    if l4 in ("tcp", "udp", "sctp"):
        sport, dport = _occ(values, f"{l4}.srcport", l4_occ), _occ(values, f"{l4}.dstport", l4_occ)
        if sport and dport:  # the 4 port bytes were captured, even if the rest of the header was not
            pkt.sport, pkt.dport = _int(sport), _int(dport)
    if l4 not in _L4_LAST or not _occ(values, _L4_LAST[l4], l4_occ):
        return pkt  # no L4 header, or cut short: no flags, ICMP keyed with ports 0
    if l4 == "tcp":
        if _int(_occ(values, "tcp.hdr_len", l4_occ), 20) < 20:
            return None  # data offset below 5 words: malformed, not metered
        pkt.tcp_flags = _int(_occ(values, "tcp.flags", l4_occ), -1)
        flagged = any(
            values[_COL[f"tcp.analysis.{name}"]]
            for name in ("retransmission", "fast_retransmission", "spurious_retransmission")
        )
        pkt.retrans = flagged and not values[_COL["tcp.analysis.keep_alive"]]
        pkt.zero_window = bool(values[_COL["tcp.analysis.zero_window"]])
        pkt.ooo = bool(values[_COL["tcp.analysis.out_of_order"]])
    elif l4 in ("icmp", "icmpv6") and proto in _ECHO:
        itype = _int(_occ(values, f"{l4}.type", l4_occ), -1)
        code = _int(_occ(values, f"{l4}.code", l4_occ), 0)
        if itype < 0:
            return pkt
        pkt.icmp_type = itype
        if itype in _ECHO[proto]:
            if not _occ(values, _ECHO_LAST[l4], l4_occ):
                return pkt  # echo header cut before the identifier and sequence: ports 0
            ident_field = "icmp.ident" if l4 == "icmp" else "icmpv6.echo.identifier"
            pkt.sport = pkt.dport = _int(_occ(values, ident_field, l4_occ))
        else:
            pkt.sport, pkt.dport = 0, (itype << 8) | code
    return pkt


def run_tshark(pcap: Path) -> list[Packet]:
    """Run tshark on one capture and return its metered packets in frame order."""
    cmd = ["tshark", "-r", str(pcap), *TSHARK_OPTS, "-T", "fields", "-E", "occurrence=a",
           "-E", "aggregator=;", "-E", "separator=/t", "-E", "quote=n"]  # fmt: skip
    for name in FIELDS:
        cmd += ["-e", name]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False).stdout
    packets = []
    for line in out.splitlines():
        cols = line.split("\t")
        if len(cols) != len(FIELDS):
            continue
        values = [c.split(";") if c else [] for c in cols]
        pkt = parse_row(values)
        if pkt is not None:
            packets.append(pkt)
    return packets


# --- flows -------------------------------------------------------------------------------------


def _addr_sort(ip: str, port: int) -> tuple[int, int, int]:
    a = ipaddress.ip_address(ip)
    return (a.version, int(a), port)


def flow_key(proto: int, src: str, sport: int, dst: str, dport: int) -> tuple[tuple, bool]:
    """Canonical key (proto, ip_a, port_a, ip_b, port_b) and whether src is side a.

    Non-echo ICMP (client port != server port) collapses to one key per IP pair with both ports -1.
    """
    if proto in _ECHO and sport != dport:
        sport = dport = ICMP_OTHER_PORT
    s, d = (src, sport), (dst, dport)
    if _addr_sort(*s) <= _addr_sort(*d):
        return (proto, *s, *d), True
    return (proto, *d, *s), False


GOLDEN_COLUMNS = (
    "proto", "ip_a", "port_a", "ip_b", "port_b",
    "packets_ab", "packets_ba", "bytes_ab", "bytes_ba", "l2_bytes_ab", "l2_bytes_ba",
    "first_ns", "last_ns", "client", "syn_count", "synack_count",
    "retrans_ab", "retrans_ba", "zero_window_ab", "zero_window_ba", "ooo_ab", "ooo_ba",
)  # fmt: skip


@dataclass
class FlowAcc:
    """Per-key totals in a/b orientation."""

    packets: list[int] = field(default_factory=lambda: [0, 0])
    bytes: list[int] = field(default_factory=lambda: [0, 0])
    l2_bytes: list[int] = field(default_factory=lambda: [0, 0])
    first_ns: int = 0
    last_ns: int = 0
    client: int = -1  # 0 = side a sent the first SYN (or got the first SYN-ACK), 1 = side b
    syn: list[int] = field(default_factory=lambda: [0, 0])
    synack: list[int] = field(default_factory=lambda: [0, 0])
    retrans: list[int] = field(default_factory=lambda: [0, 0])
    zero_window: list[int] = field(default_factory=lambda: [0, 0])
    ooo: list[int] = field(default_factory=lambda: [0, 0])


def aggregate(packets: Iterable[Packet]) -> dict[tuple, FlowAcc]:
    """Aggregate packets into flows; later fragments follow their first fragment's key."""
    packets = list(packets)
    first_frag: dict[tuple, tuple[int, int]] = {}
    for p in packets:
        if p.frag_key is not None and not p.later_fragment and p.frag_key not in first_frag:
            first_frag[p.frag_key] = (p.sport, p.dport)
    flows: dict[tuple, FlowAcc] = {}
    for p in packets:
        if p.later_fragment:
            p.sport, p.dport = first_frag.get(p.frag_key, (0, 0))
        key, is_a = flow_key(p.proto, p.src, p.sport, p.dst, p.dport)
        acc = flows.get(key)
        if acc is None:
            acc = flows[key] = FlowAcc(first_ns=p.ts_ns, last_ns=p.ts_ns)
        d = 0 if is_a else 1
        acc.packets[d] += 1
        acc.bytes[d] += p.ip_len
        acc.l2_bytes[d] += p.frame_len
        acc.first_ns = min(acc.first_ns, p.ts_ns)
        acc.last_ns = max(acc.last_ns, p.ts_ns)
        if p.tcp_flags >= 0:
            syn, ack = p.tcp_flags & 0x02, p.tcp_flags & 0x10
            if syn and not ack:
                acc.syn[d] += 1
                if acc.client < 0:
                    acc.client = d
            elif syn and ack:
                acc.synack[d] += 1
                if acc.client < 0:
                    acc.client = 1 - d
            acc.retrans[d] += p.retrans
            acc.zero_window[d] += p.zero_window
            acc.ooo[d] += p.ooo
    return flows


def flow_rows(flows: dict[tuple, FlowAcc]) -> list[list]:
    """Golden CSV rows sorted by key."""
    rows = []
    for key in sorted(flows, key=lambda k: (k[0], _addr_sort(k[1], k[2]), _addr_sort(k[3], k[4]))):
        a = flows[key]
        c = a.client
        rows.append([
            *key, *a.packets, *a.bytes, *a.l2_bytes, a.first_ns, a.last_ns,
            "" if c < 0 else "ab"[c],
            a.syn[c] if c >= 0 else 0, a.synack[1 - c] if c >= 0 else 0,
            *a.retrans, *a.zero_window, *a.ooo,
        ])  # fmt: skip
    return rows


# --- argus -------------------------------------------------------------------------------------

ARGUS_CONF = """ARGUS_FLOW_TYPE="Bidirectional"
ARGUS_FLOW_KEY="CLASSIC_5_TUPLE"
ARGUS_FLOW_STATUS_INTERVAL=3600
ARGUS_MAR_STATUS_INTERVAL=3600
ARGUS_GENERATE_RESPONSE_TIME_DATA=no
ARGUS_GENERATE_MAC_DATA=no
"""
ARGUS_FIELDS = ("proto", "saddr", "sport", "daddr", "dport", "spkts", "dpkts", "synack", "ackdat")
ARGUS_COLUMNS = (
    "proto", "ip_a", "port_a", "ip_b", "port_b", "packets_ab", "packets_ba", "records",
    "rtt_server_us", "rtt_client_us",
)  # fmt: skip


def run_argus(pcap: Path) -> list[list]:
    """Argus + racluster on one capture: TCP flows merged by unordered key."""
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "argus.conf"
        conf.write_text(ARGUS_CONF)
        out = Path(tmp) / "out.argus"
        subprocess.run(["argus", "-X", "-F", str(conf), "-r", str(pcap), "-w", str(out)],
                       capture_output=True, check=False)  # fmt: skip
        if not out.exists():
            return []
        text = subprocess.run(
            ["racluster", "-r", str(out), "-n", "-p", "6", "-c", ",",
             "-s", *ARGUS_FIELDS, "-", "tcp"],
            capture_output=True, text=True, check=False,
        ).stdout  # fmt: skip
    merged: dict[tuple, dict] = {}
    for line in text.splitlines():
        cols = line.split(",")
        if len(cols) != len(ARGUS_FIELDS) or cols[0] != "tcp":
            continue
        _, saddr, sport, daddr, dport, spkts, dpkts, synack, ackdat = cols
        try:
            key, is_a = flow_key(6, saddr, int(sport), daddr, int(dport))
        except ValueError:
            continue
        m = merged.setdefault(key, {"pk": [0, 0], "rec": 0, "synack": [], "ackdat": []})
        m["pk"][0 if is_a else 1] += int(spkts)
        m["pk"][1 if is_a else 0] += int(dpkts)
        m["rec"] += 1
        if float(synack or 0) > 0:
            m["synack"].append(float(synack))
        if float(ackdat or 0) > 0:
            m["ackdat"].append(float(ackdat))
    rows = []
    for key in sorted(merged, key=lambda k: (_addr_sort(k[1], k[2]), _addr_sort(k[3], k[4]))):
        m = merged[key]

        def one(vals: list[float]) -> str:
            return f"{vals[0] * 1e6:.0f}" if len(vals) == 1 else ""

        rows.append([*key, *m["pk"], m["rec"], one(m["synack"]), one(m["ackdat"])])
    return rows


# --- deepflow ----------------------------------------------------------------------------------

DEEPFLOW_DIR = "deepflow/agent/resources/test/flow_generator"
_DF_HEADER = re.compile(r'^\d+th perf data from "resources/test/flow_generator/(?P<pcap>[^"]+)":$')
_DF_SCALAR = re.compile(r"^\s{4}(?P<name>\w+): (?P<value>[^,{]+),$")
_DF_STATS = re.compile(r"^\s{4}(?P<name>\w+): TimeStats \{$")
_DF_INNER = re.compile(r"^\s{8}(?P<name>\w+): (?P<value>[^,]+),$")
_DURATION = re.compile(r"^(?P<num>[0-9.]+)(?P<unit>ns|µs|us|ms|s)$")
_UNIT_US = {"ns": Decimal("0.001"), "µs": Decimal(1), "us": Decimal(1), "ms": Decimal(1000),
            "s": Decimal(1_000_000)}  # fmt: skip


def duration_us(text: str) -> str:
    """Rust ``Duration`` debug text (``477µs``, ``28.837ms``) as microseconds."""
    m = _DURATION.match(text.strip())
    if not m:
        return text.strip()
    value = Decimal(m["num"]) * _UNIT_US[m["unit"]]
    return format(value.normalize(), "f")


def parse_deepflow(text: str) -> dict[str, dict[str, str]]:
    """Final PerfData snapshot per pcap (the blocks are cumulative, one per packet)."""
    final: dict[str, dict[str, str]] = {}
    pcap = None
    stats = None
    for line in text.splitlines():
        if m := _DF_HEADER.match(line):
            pcap = m["pcap"]
            final[pcap] = {}
            stats = None
        elif pcap is None:
            continue
        elif m := _DF_STATS.match(line):
            stats = m["name"]
        elif stats and (m := _DF_INNER.match(line)):
            value = m["value"]
            final[pcap][f"{stats}_{m['name']}"] = (
                duration_us(value) if m["name"] in ("sum", "max") else value
            )
        elif m := _DF_SCALAR.match(line):
            stats = None
            value = m["value"].strip()
            final[pcap][m["name"]] = duration_us(value) if m["name"] == "rtt_full" else value
    return final


def deepflow_goldens(pcaps: Path, out: Path) -> int:
    """Write tests/golden/deepflow/<pcap>.csv (field,value) for every TCP PerfData result."""
    ref = pcaps / "reference" / DEEPFLOW_DIR
    dest = out / "deepflow"
    written = 0
    for result in sorted(ref.rglob("*.result")):
        parsed = parse_deepflow(result.read_text(encoding="utf-8"))
        for pcap_name, data in sorted(parsed.items()):
            rel = f"{DEEPFLOW_DIR}/{pcap_name}"
            if not (pcaps / rel).exists() or not data:
                continue
            packets = run_tshark(pcaps / rel)
            data["first_src"] = packets[0].src if packets else ""
            data["first_dst"] = packets[0].dst if packets else ""
            with open(dest / f"{golden_name(rel)}.csv", "w", newline="") as fh:
                w = csv.writer(fh, lineterminator="\n")
                w.writerow(["field", "value"])
                w.writerow(["source", str(result.relative_to(pcaps))])
                for name in sorted(data):  # first_src/first_dst: the first packet (DeepFlow's fpd)
                    w.writerow([name, data[name]])
            written += 1
    return written


# --- driver ------------------------------------------------------------------------------------


def golden_name(manifest_path: str) -> str:
    """File name (without .csv) of a capture's golden: the manifest path with / replaced by __."""
    return manifest_path.replace("/", "__")


def tool_versions() -> str:
    """The tshark and argus versions, one per line."""
    tshark = subprocess.run(["tshark", "--version"], capture_output=True, text=True).stdout
    argus = subprocess.run(["argus", "-h"], capture_output=True, text=True)
    ra = subprocess.run(["racluster", "-h"], capture_output=True, text=True)
    lines = [
        "tshark: " + tshark.splitlines()[0].strip(),
        "argus: " + (argus.stdout + argus.stderr).splitlines()[0].strip(),
        "racluster: " + (ra.stdout + ra.stderr).splitlines()[0].strip(),
        "tshark options: " + " ".join(TSHARK_OPTS),
    ]
    return "\n".join(lines) + "\n"


def selected_captures(pcaps: Path) -> list[str]:
    """Manifest paths of readable pcap/pcapng files."""
    with open(pcaps / "MANIFEST.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return sorted(
        r["path"]
        for r in rows
        if not r["capinfos_error"] and r["format"] in ("pcap", "pcapng") and (pcaps / r["path"]).exists()
    )


def write_csv(path: Path, header: Iterable[str], rows: list[list]) -> None:
    """Write a CSV; a ``.gz`` path is gzipped deterministically (no name, mtime 0)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    data = buf.getvalue().encode()
    if path.suffix == ".gz":
        with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
            gz.write(data)
    else:
        path.write_bytes(data)


def process(pcaps: Path, out: Path, rel: str) -> tuple[str, int, int]:
    """Golden files of one capture; returns (path, tshark flows, argus flows)."""
    flows = aggregate(run_tshark(pcaps / rel))
    if not flows:
        return rel, 0, 0
    write_csv(out / "tshark" / f"{golden_name(rel)}.csv.gz", GOLDEN_COLUMNS, flow_rows(flows))
    argus_rows: list[list] = []
    if any(k[0] == 6 for k in flows):
        argus_rows = run_argus(pcaps / rel)
        if argus_rows:
            write_csv(out / "argus" / f"{golden_name(rel)}.csv", ARGUS_COLUMNS, argus_rows)
    return rel, len(flows), len(argus_rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pcaps", type=Path, required=True, help="the shared/pcaps directory")
    parser.add_argument("--out", type=Path, default=Path("tests/golden"), help="golden directory")
    parser.add_argument("--jobs", type=int, default=4, help="captures processed in parallel")
    args = parser.parse_args(argv)
    pcaps, out = args.pcaps.resolve(), args.out
    for sub in ("tshark", "argus", "deepflow"):
        (out / sub).mkdir(parents=True, exist_ok=True)
        for old in [*(out / sub).glob("*.csv"), *(out / sub).glob("*.csv.gz")]:
            old.unlink()
    captures = selected_captures(pcaps)
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(lambda rel: process(pcaps, out, rel), captures))
    n_t = sum(1 for _, t, _ in results if t)
    n_a = sum(1 for _, _, a in results if a)
    n_d = deepflow_goldens(pcaps, out)
    (out / "VERSIONS").write_text(tool_versions())
    print(f"{len(captures)} captures: tshark goldens {n_t}, argus {n_a}, deepflow {n_d}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

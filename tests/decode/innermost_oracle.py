"""The decoder's innermost packet, frame by frame, against tshark's.

For each frame tshark's innermost IP layer is the last ``ip``/``ipv6`` of ``frame.protocols``
before any ICMP (whose quoted header is not the packet), its occurrence of ``ip(v6).src/dst``
the addresses, and the TCP/UDP header right after it (IPv6 extension headers and AH skipped) the
ports. As in the goldens (docs/oracles.md), a tunnel that carries Ethernet or MPLS with no IP
inside (CDP in ERSPAN, ARP in VXLAN) makes the frame unmetered. The decoder's side is the row's
innermost addresses and, for TCP/UDP, its ports. A frame whose innermost packet has no IP on one
side and IP on the other also counts as a difference.

One difference is by design and counted apart: tshark (without reassembly) still opens a tunnel in
the first fragment of a fragmented outer packet, the decoder keys every fragment on the outer
packet so that the fragments of one packet stay in one flow (docs/flow-semantics.md).

Run over the shared captures (one line per capture that differs, then the totals)::

    .venv/bin/python tests/decode/innermost_oracle.py [--pcaps ../shared/pcaps] [--show 3]
"""

from __future__ import annotations

import argparse
import csv
import ipaddress
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

PCAPS = Path(__file__).resolve().parents[2] / ".." / "shared" / "pcaps"

#: The goldens' tshark options (scripts/regen_golden.py): no reassembly, VXLAN on 8472 too.
TSHARK_OPTS = (
    "-n",
    "-o", "ip.defragment:FALSE",
    "-o", "ipv6.defragment:FALSE",
    "-d", "udp.port==8472,vxlan",
    "-d", "udp.port==4789,vxlan",
    "-d", "udp.port==6081,geneve",
)  # fmt: skip
FIELDS = ("frame.protocols", "ip.src", "ip.dst", "ipv6.src", "ipv6.dst",
          "tcp.srcport", "tcp.dstport", "udp.srcport", "udp.dstport")  # fmt: skip
_ICMP = frozenset({"icmp", "icmpv6"})

#: (source, destination, "tcp"/"udp"/"", source port, destination port) or None (no IP).
Key = tuple[str, str, str, int, int] | None


def _addr(text: str) -> str:
    return str(ipaddress.ip_address(text))


def _occ(column: str, index: int) -> str:
    values = column.split(",") if column else []
    return values[index] if index < len(values) else ""


def tshark_keys(path: Path, extra_opts: Sequence[str] = ()) -> list[Key]:
    """tshark's innermost (addresses, L4, ports) per frame of ``path``."""
    cmd = ["tshark", "-r", str(path), *TSHARK_OPTS, *extra_opts, "-T", "fields", "-E", "occurrence=a",
           "-E", "aggregator=,", "-E", "separator=\t"]  # fmt: skip
    for name in FIELDS:
        cmd += ["-e", name]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False).stdout
    keys: list[Key] = []
    for line in out.splitlines():
        cols = dict(zip(FIELDS, line.split("\t"), strict=False))
        tokens = cols.get("frame.protocols", "").split(":")
        cut = next((i for i, t in enumerate(tokens) if t in _ICMP), len(tokens))
        ips = [i for i in range(cut) if tokens[i] in ("ip", "ipv6")]
        if not ips:
            keys.append(None)
            continue
        k = ips[-1]
        if any(t in ("eth", "mpls") for t in tokens[k + 1 : cut]):
            keys.append(None)  # an L2 tunnel payload that is not IP: not metered
            continue
        layer = tokens[k]
        occ = tokens[:k].count(layer)
        src, dst = _occ(cols.get(f"{layer}.src", ""), occ), _occ(cols.get(f"{layer}.dst", ""), occ)
        if not src or not dst:
            keys.append(None)
            continue
        j = k + 1
        while j < len(tokens) and (tokens[j].startswith("ipv6.") or tokens[j] == "ah"):
            j += 1
        l4 = tokens[j] if j < len(tokens) and tokens[j] in ("tcp", "udp") else ""
        sport = dport = 0
        if l4:
            n = tokens[:j].count(l4)
            sp, dp = _occ(cols.get(f"{l4}.srcport", ""), n), _occ(cols.get(f"{l4}.dstport", ""), n)
            if sp and dp:
                sport, dport = int(sp), int(dp)
            else:
                l4 = ""
        keys.append((_addr(src), _addr(dst), l4, sport, dport))
    return keys


def cloudtap_keys(path: Path) -> tuple[list[Key], list[bool]]:
    """The decoder's innermost (addresses, L4, ports) per frame of ``path``, and per frame whether
    it was left undecapsulated because its outer packet is an IP fragment."""
    from cloudtap.capture.pcap_file import CaptureFile
    from cloudtap.decode import decode_frames
    from cloudtap.schema.address import to_text
    from cloudtap.schema.packet import FLAG_FRAGMENT, FLAG_LATER_FRAGMENT, STATUS_OK, STATUS_TRUNCATED

    keys: list[Key] = []
    fragments: list[bool] = []
    with CaptureFile(path) as capture:
        for batch in capture.batches():
            rows = decode_frames(batch)
            usable = (rows["status"] == STATUS_OK) | (
                (rows["status"] == STATUS_TRUNCATED) & (rows["ip_ver"] > 0)
            )
            outer_fragment = ((rows["flags"] & FLAG_FRAGMENT) > 0) & (rows["tunnel_depth"] == 0)
            fragments += outer_fragment.tolist()
            for row, ok in zip(rows.tolist(), usable.tolist(), strict=True):
                if not ok:
                    keys.append(None)
                    continue
                r = dict(zip(rows.dtype.names, row, strict=True))
                proto, later = r["proto"], r["flags"] & FLAG_LATER_FRAGMENT
                l4 = {6: "tcp", 17: "udp"}.get(proto, "") if not later else ""
                sport, dport = (r["sport"], r["dport"]) if l4 else (0, 0)
                if l4 and sport == 0 and dport == 0 and r["l4_offset"] == 0:
                    l4 = ""
                keys.append(
                    (_addr(to_text(r["src_hi"], r["src_lo"])), _addr(to_text(r["dst_hi"], r["dst_lo"])), l4,
                     int(sport), int(dport))
                )  # fmt: skip
    return keys, fragments


@dataclass
class Comparison:
    """Frames of one capture and those whose innermost key differs (frame number, tshark, cloudtap);
    ``fragments`` holds the differences on outer IP fragments (by design, see the module docstring)."""

    frames: int
    differ: list[tuple[int, Key, Key]] = field(default_factory=list)
    fragments: list[tuple[int, Key, Key]] = field(default_factory=list)


def compare(path: Path, extra_opts: Sequence[str] = ()) -> Comparison:
    """Compare tshark and the decoder frame by frame on ``path``."""
    want = tshark_keys(path, extra_opts)
    have, fragments = cloudtap_keys(path)
    result = Comparison(frames=max(len(want), len(have)))
    for i in range(result.frames):
        w = want[i] if i < len(want) else None
        h = have[i] if i < len(have) else None
        if w != h:
            by_design = i < len(fragments) and fragments[i]
            (result.fragments if by_design else result.differ).append((i + 1, w, h))
    return result


def manifest_captures(root: Path) -> list[str]:
    """Manifest paths of the pcap/pcapng captures tshark reads."""
    with open(root / "MANIFEST.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [r["path"] for r in rows if r["format"] in ("pcap", "pcapng") and not r["capinfos_error"]]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pcaps", type=Path, default=PCAPS)
    parser.add_argument("--show", type=int, default=2, help="differing frames printed per capture")
    args = parser.parse_args(argv)
    np.seterr(all="ignore")
    total = differ_caps = differ_frames = frames = fragment_frames = 0
    for rel in manifest_captures(args.pcaps):
        total += 1
        try:
            result = compare(args.pcaps / rel)
        except Exception as exc:  # a capture cloudtap refuses counts as differing
            differ_caps += 1
            print(f"{rel}: cloudtap error {type(exc).__name__}: {exc}")
            continue
        frames += result.frames
        fragment_frames += len(result.fragments)
        if result.differ:
            differ_caps += 1
            differ_frames += len(result.differ)
            print(f"{rel}: {len(result.differ)}/{result.frames} frames differ")
            for number, want, have in result.differ[: args.show]:
                print(f"    frame {number}: tshark {want} cloudtap {have}")
    print(f"captures differing: {differ_caps}/{total}; frames differing: {differ_frames}/{frames}")
    print(f"frames on outer IP fragments not decapsulated (by design): {fragment_frames}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

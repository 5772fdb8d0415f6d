"""Necessary conditions of a tcpdump filter, for skipping packet-store blocks by their bloom index.

Only what is certainly required is extracted: the ``host ADDR`` and ``port N`` terms (with optional
``ip``/``ip6``/``tcp``/``udp``/``sctp`` and ``src``/``dst`` qualifiers) that are top-level conjuncts
of the expression. Any top-level ``or`` makes the expression opaque (no hints); negated or
parenthesised conjuncts and every other primitive are ignored. Hints only ever let the store skip
blocks; libpcap's compiled filter still decides every packet.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from cloudtap.schema.packet import IPV4_MAPPED_LO

_TOKEN = re.compile(r"\(|\)|&&|\|\||!|[^\s()!&|]+")
_PROTO_QUALIFIERS = {"ip", "ip6", "tcp", "udp", "sctp"}
_DIR_QUALIFIERS = {"src", "dst"}


@dataclass(frozen=True)
class FilterHints:
    """Addresses (as ``(hi, lo)`` halves) and ports every matching packet must carry."""

    addresses: list[tuple[int, int]] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.addresses or self.ports)


def address_halves(text: str) -> tuple[int, int] | None:
    """``"10.0.0.1"`` / ``"fd00::1"`` -> the ``(hi, lo)`` halves of PACKET_DTYPE; None if not an address."""
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if addr.version == 4:
        return 0, IPV4_MAPPED_LO | int(addr)
    value = int(addr)
    return value >> 64, value & 0xFFFF_FFFF_FFFF_FFFF


def _conjuncts(tokens: list[str]) -> list[list[str]] | None:
    parts: list[list[str]] = [[]]
    depth = 0
    for tok in tokens:
        low = tok.lower()
        if tok == "(":
            depth += 1
        elif tok == ")":
            depth -= 1
        if depth == 0 and low in ("or", "||"):
            return None
        if depth == 0 and low in ("and", "&&"):
            parts.append([])
            continue
        parts[-1].append(tok)
    return [p for p in parts if p]


def filter_hints(expression: str | None) -> FilterHints:
    """Extract the hosts and ports a packet must have to match ``expression`` (see module doc)."""
    hints = FilterHints()
    if not expression or not expression.strip():
        return hints
    parts = _conjuncts(_TOKEN.findall(expression))
    if parts is None:
        return hints
    for part in parts:
        words = [w.lower() for w in part]
        if words[0] in ("(", "not", "!"):
            continue
        i = 0
        while i < len(words) and words[i] in _PROTO_QUALIFIERS:
            i += 1
        if i < len(words) and words[i] in _DIR_QUALIFIERS:
            i += 1
        rest = words[i:]
        if len(rest) != 2:
            continue
        if rest[0] == "host":
            halves = address_halves(part[i + 1])
            if halves is not None:
                hints.addresses.append(halves)
        elif rest[0] == "port" and rest[1].isdigit() and int(rest[1]) < 65536:
            hints.ports.append(int(rest[1]))
    return hints

"""128-bit addresses as (hi, lo) uint64 pairs, and their text form."""

from __future__ import annotations

import ipaddress

import numpy as np

from cloudtap.schema.packet import IPV4_MAPPED_LO

_V4_MASK = 0xFFFF_FFFF_0000_0000


def is_ipv4(hi: int, lo: int) -> bool:
    """True when (hi, lo) is an IPv4-mapped address."""
    return hi == 0 and (lo & _V4_MASK) == IPV4_MAPPED_LO


def to_text(hi: int, lo: int) -> str:
    """Render one address: dotted quad for IPv4-mapped, RFC 5952 text for IPv6."""
    hi, lo = int(hi), int(lo)
    if is_ipv4(hi, lo):
        return str(ipaddress.IPv4Address(lo & 0xFFFF_FFFF))
    return str(ipaddress.IPv6Address((hi << 64) | lo))


def from_text(text: str) -> tuple[int, int]:
    """Parse an IPv4 or IPv6 address into (hi, lo)."""
    addr = ipaddress.ip_address(text)
    if addr.version == 4:
        return 0, IPV4_MAPPED_LO | int(addr)
    value = int(addr)
    return value >> 64, value & 0xFFFF_FFFF_FFFF_FFFF


def column_to_text(hi: np.ndarray, lo: np.ndarray) -> list[str]:
    """Render a column of addresses, converting each distinct address once."""
    pairs = np.empty(hi.shape[0], dtype=[("hi", "u8"), ("lo", "u8")])
    pairs["hi"] = hi
    pairs["lo"] = lo
    uniq, inverse = np.unique(pairs, return_inverse=True)
    texts = [to_text(int(u["hi"]), int(u["lo"])) for u in uniq]
    return [texts[i] for i in inverse.ravel()]


def mac_to_text(mac: int) -> str:
    """Render a 48-bit MAC held in an integer as aa:bb:cc:dd:ee:ff."""
    return ":".join(f"{(int(mac) >> s) & 0xFF:02x}" for s in range(40, -8, -8))

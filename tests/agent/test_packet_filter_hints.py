"""Filter hints: only certain conjuncts become required hosts/ports; anything doubtful gives none."""

from __future__ import annotations

from cloudtap.agent.packet_filter_hints import address_halves, filter_hints


def test_conjunct_hosts_and_ports_are_required() -> None:
    h = filter_hints("ip src host 10.0.0.1 and tcp dst port 443 and (port 1 or port 2) and not host 10.9.9.9")
    assert h.addresses == [address_halves("10.0.0.1")] and h.ports == [443]
    assert address_halves("10.0.0.1") == (0, 0x0000_FFFF_0A00_0001)
    assert address_halves("fd00::1") == (0xFD00 << 48, 1)


def test_disjunctions_and_other_primitives_give_no_hints() -> None:
    assert not filter_hints("host 10.0.0.1 or host 10.0.0.2")
    assert not filter_hints("src or dst host 10.0.0.1")
    assert not filter_hints("net 10.0.0.0/8 and portrange 1-100 and ether host 00:11:22:33:44:55")
    assert not filter_hints("port http") and not filter_hints(None) and not filter_hints("  ")

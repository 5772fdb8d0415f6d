"""The broker on a virtual hypervisor: copies of VM traffic to a tool namespace, decoded there by the kernel
(VXLAN device) and by tshark (GRE, ERSPAN II/III), compared byte for byte with tcpdump on the VM's tap."""

from __future__ import annotations

import ipaddress
import time
from pathlib import Path

import pytest
from broker_rig import Rig, Tcpdump, chop, read_pcap, run, tools_missing, tshark_fields

from cloudtap.broker.config import BrokerSection
from netns import needs_netns

pytestmark = [needs_netns, pytest.mark.skipif(bool(tools_missing()), reason=tools_missing() or "tools")]


def section(dests: list[dict], rules: list[dict]) -> BrokerSection:  # type: ignore[type-arg]
    return BrokerSection.model_validate({"enabled": True, "destinations": dests, "rules": rules})


def traffic(rig: Rig, count: int = 20, size: int = 400) -> None:
    """UDP vm1 -> vm2 and pings (requests and replies cross both taps)."""
    with rig.vm2.udp_sink(5000):
        rig.vm1.send_udp(rig.vm2.ip, 5000, count=count, size=size)
    assert rig.vm1.ping(rig.vm2.ip, count=3) == 3


def test_gre_key_truncated_copies_equal_the_tap_capture_cut(tmp_path: Path) -> None:
    with Rig("bg") as rig:
        tool = Tcpdump(tmp_path / "tool.pcap", "eth0", rig.tool.netns, "ip proto 47")
        tap = Tcpdump(tmp_path / "tap.pcap", rig.vm1.tap_name)
        broker = rig.start(section(
            [{"name": "ids", "encap": "gre", "address": rig.tool.ip, "key": 4242}],
            [{"name": "vm1", "interfaces": [rig.vm1.tap_name], "truncate": 128, "destinations": ["ids"]}],
        ))  # fmt: skip
        traffic(rig)
        rig.stop_pump()
        want = tap.stop()
        tool.stop()
        assert len(want) == 20 + 6 and not rig.pump_errors, tap.summary
        assert broker.status()["destinations"]["ids"]["packets"] == len(want), broker.status()
        inner = chop(tmp_path / "tool.pcap", tmp_path / "inner.pcap", head=14 + 20 + 8)
        cut = chop(tmp_path / "tap.pcap", tmp_path / "cut.pcap", snap=128)
        assert sorted(inner) == sorted(cut)
        rows = tshark_fields(tmp_path / "tool.pcap", ["gre.key", "gre.proto", "ip.src", "ip.dst"])
        assert {r[0] for r in rows} == {"0x00001092"} and {r[1] for r in rows} == {"0x6558"}
        assert {r[2].split(",")[-1] for r in rows} == {rig.vm1.ip, rig.vm2.ip}  # inner IPs
        status = broker.status()
        assert status["destinations"]["ids"]["packets"] == len(want) and status["rules"]["vm1"][
            "matched"
        ] == len(want)
        assert status["destinations"]["ids"]["bytes"] == sum(20 + 8 + len(c) for c in cut)


def test_erspan2_and_erspan3_full_frames_and_mtu_truncation(tmp_path: Path) -> None:
    with Rig("be") as rig:
        e2 = Tcpdump(tmp_path / "e2.pcap", "eth0", rig.tool.netns, "ip proto 47 and ip[22:2] = 0x88be")
        e3 = Tcpdump(tmp_path / "e3.pcap", "eth0", rig.tool.netns, "ip proto 47 and ip[22:2] = 0x22eb")
        tap = Tcpdump(tmp_path / "tap.pcap", rig.vm1.tap_name)
        broker = rig.start(section(
            [{"name": "e2", "encap": "erspan2", "address": rig.tool.ip, "session_id": 301},
             {"name": "e3", "encap": "erspan3", "address": rig.tool.ip, "session_id": 302, "mtu": 600}],
            [{"name": "a", "interfaces": [rig.vm1.tap_name], "destinations": ["e2", "e3"]}],
        ))  # fmt: skip
        traffic(rig, size=1000)
        rig.stop_pump()
        want = tap.stop()
        e2.stop()
        e3.stop()
        assert sorted(chop(tmp_path / "e2.pcap", tmp_path / "i2.pcap", head=14 + 20 + 16)) == sorted(want)
        fit = 600 - 20 - 8 - 12
        cut = chop(tmp_path / "tap.pcap", tmp_path / "cut.pcap", snap=fit)
        assert sorted(chop(tmp_path / "e3.pcap", tmp_path / "i3.pcap", head=14 + 20 + 20)) == sorted(cut)
        rows = tshark_fields(tmp_path / "e2.pcap", ["erspan.version", "erspan.spanid", "gre.sequence_number"])
        assert {(r[0], r[1]) for r in rows} == {("1", "301")}
        assert sorted(int(r[2]) for r in rows) == list(range(len(want)))
        rows = tshark_fields(
            tmp_path / "e3.pcap", ["erspan.version", "erspan.spanid", "erspan.truncated", "udp.length"]
        )
        assert {(r[0], r[1]) for r in rows} == {("2", "302")}
        assert sum(r[2] == "1" for r in rows) == 20  # the 1000-byte datagrams were cut to fit the MTU
        e3c = broker.status()["destinations"]["e3"]
        assert e3c["truncated_mtu"] == 20 and e3c["packets"] == len(want)


def test_vxlan_copies_arrive_on_a_kernel_vxlan_device(tmp_path: Path) -> None:
    with Rig("bv") as rig:
        rig.tool.run(["ip", "link", "add", "vx0", "type", "vxlan", "id", "5001", "dstport", "4789", "local",
                      rig.tool.ip, "dev", "eth0", "nolearning"])  # fmt: skip
        rig.tool.run(["ip", "link", "set", "vx0", "up"])
        got = Tcpdump(tmp_path / "vx.pcap", "vx0", rig.tool.netns)
        tap = Tcpdump(tmp_path / "tap.pcap", rig.vm1.tap_name)
        broker = rig.start(section(
            [{"name": "vx", "encap": "vxlan", "address": rig.tool.ip, "vni": 5001}],
            [{"name": "a", "interfaces": [rig.vm1.tap_name], "truncate": 128, "destinations": ["vx"]}],
        ))  # fmt: skip
        traffic(rig)
        rig.stop_pump()
        tap.stop()
        inner = got.stop()
        assert broker.status()["destinations"]["vx"]["packets"] == 26, broker.status()
        assert sorted(inner) == sorted(chop(tmp_path / "tap.pcap", tmp_path / "cut.pcap", snap=128))


def test_dedup_vm_to_vm_seen_on_both_taps_goes_once(tmp_path: Path) -> None:
    with Rig("bd") as rig:
        tool = Tcpdump(tmp_path / "tool.pcap", "eth0", rig.tool.netns, "ip proto 47")
        tap1 = Tcpdump(tmp_path / "t1.pcap", rig.vm1.tap_name)
        tap2 = Tcpdump(tmp_path / "t2.pcap", rig.vm2.tap_name)
        broker = rig.start(section(
            [{"name": "ids", "encap": "gre", "address": rig.tool.ip}],
            [{"name": "all", "interfaces": ["tap*"], "destinations": ["ids"]}],
        ))  # fmt: skip
        traffic(rig)
        rig.stop_pump()
        tap1.stop()
        tap2.stop()
        tool.stop()
        run(
            "mergecap",
            "-F",
            "pcap",
            "-w",
            str(tmp_path / "both.pcap"),
            str(tmp_path / "t1.pcap"),
            str(tmp_path / "t2.pcap"),
        )
        run("editcap", "-F", "pcap", "-D", "100", str(tmp_path / "both.pcap"), str(tmp_path / "once.pcap"))
        once = read_pcap(tmp_path / "once.pcap")
        assert len(read_pcap(tmp_path / "both.pcap")) == 2 * len(once) == 2 * 26
        assert sorted(chop(tmp_path / "tool.pcap", tmp_path / "inner.pcap", head=14 + 20 + 4)) == sorted(once)
        assert broker.status()["dedup_skipped"] == len(once)


def test_raw_copies_with_vlan_stripped_on_an_interface(tmp_path: Path) -> None:
    with Rig("br") as rig:
        rig.tool.run(["ip", "link", "set", "eth0", "promisc", "on"])
        tool = Tcpdump(tmp_path / "tool.pcap", "eth0", rig.tool.netns, "udp")
        tap = Tcpdump(tmp_path / "tap.pcap", rig.vm1.tap_name)
        rig.start(section(
            [{"name": "port", "encap": "raw", "interface": rig.tool.tap_name}],
            [{"name": "a", "interfaces": [rig.vm1.tap_name], "vlan": "strip", "bpf": "udp port 7000",
              "destinations": ["port"]}],
        ))  # fmt: skip
        macs = bytes.fromhex(rig.vm2.mac.replace(":", "") + rig.vm1.mac.replace(":", ""))
        for ip_id in range(5):  # 802.1Q VLAN 100 / IPv4 / UDP 7000 -> 7000, distinct IP ids (not duplicates)
            tagged = f"81000064080045000020{ip_id:04x}00004011000001020304050607081b581b58000c0000"
            rig.vm1.send_frames(macs + bytes.fromhex(tagged) + b"abcd").wait(10)
        with rig.vm2.udp_sink(5000):
            rig.vm1.send_udp(rig.vm2.ip, 5000, count=3)  # not port 7000: not forwarded
        rig.stop_pump()
        want = [f for f in tap.stop() if f[12:14] == b"\x81\x00"]
        got = tool.stop()
        assert len(want) == 5 and sorted(got) == sorted(f[:12] + f[16:] for f in want)


def test_unreachable_destination_costs_counted_drops_only(tmp_path: Path) -> None:
    with Rig("bu") as rig:
        dead = rig.tool.ip.rsplit(".", 1)[0] + ".77"
        run("ip", "route", "add", "unreachable", f"{dead}/32")
        try:
            tool = Tcpdump(tmp_path / "tool.pcap", "eth0", rig.tool.netns, "ip proto 47")
            broker = rig.start(section(
                [{"name": "dead", "encap": "erspan2", "address": dead},
                 {"name": "nosuch", "encap": "raw", "interface": "nosuchif0"},
                 {"name": "ok", "encap": "gre", "address": rig.tool.ip}],
                [{"name": "a", "interfaces": [rig.vm1.tap_name], "destinations": ["dead", "nosuch", "ok"]}],
            ))  # fmt: skip
            traffic(rig)
            rig.stop_pump()
            got = tool.stop()
        finally:
            run("ip", "route", "del", "unreachable", f"{dead}/32")
        s = broker.status()["destinations"]
        assert not rig.pump_errors and len(got) == 26 and s["ok"]["packets"] == 26
        assert s["dead"]["drops_error"] == 26 and s["dead"]["packets"] == 0
        assert s["nosuch"]["drops_error"] == 26
        assert "nosuch" in broker.status()["errors"]


def test_ipv6_underlay_erspan2_and_vxlan(tmp_path: Path) -> None:
    with Rig("b6") as rig:
        host6, tool6 = (str(ipaddress.ip_address(rig.prefix6 + x)) for x in (":1", ":2"))
        rig.enable_ipv6(host6, tool6)
        rig.tool.run(["ip", "link", "add", "vx6", "type", "vxlan", "id", "6006", "dstport", "4790", "local",
                      tool6, "dev", "eth0", "nolearning"])  # fmt: skip
        rig.tool.run(["ip", "link", "set", "vx6", "up"])
        time.sleep(0.2)
        tool = Tcpdump(tmp_path / "tool.pcap", "eth0", rig.tool.netns, "ip6 proto 47")
        vx6 = Tcpdump(tmp_path / "vx6.pcap", "vx6", rig.tool.netns)
        tap = Tcpdump(tmp_path / "tap.pcap", rig.vm1.tap_name)
        rig.start(section(
            [{"name": "v6", "encap": "erspan2", "address": tool6, "session_id": 9},
             {"name": "x6", "encap": "vxlan", "address": tool6, "port": 4790, "vni": 6006}],
            [{"name": "a", "interfaces": [rig.vm1.tap_name], "truncate": 200, "destinations": ["v6", "x6"]}],
        ))  # fmt: skip
        traffic(rig)
        rig.stop_pump()
        cut = chop(tap.path, tmp_path / "cut.pcap", snap=200) if tap.stop() else []
        tool.stop()
        assert len(cut) == 26
        assert sorted(chop(tmp_path / "tool.pcap", tmp_path / "inner.pcap", head=14 + 40 + 16)) == sorted(cut)
        rows = tshark_fields(tmp_path / "tool.pcap", ["ipv6.dst", "erspan.spanid"])
        assert {tuple(r) for r in rows} == {(tool6, "9")}
        assert sorted(vx6.stop()) == sorted(cut)  # decapsulated by the kernel's IPv6 vxlan device

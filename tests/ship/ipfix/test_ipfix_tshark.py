"""Wireshark's CFLOW dissector decodes the export without complaint, and its values are the records'.

The export of real captures is received on a UDP socket of the test, written to a pcap (one
datagram a packet), then read back with ``tshark -d udp.port==PORT,cflow``.
"""

from __future__ import annotations

import ipaddress
import shutil
import socket
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
from ipfix_oracle import capture

from cloudtap.meter import MeterConfig, meter_file
from cloudtap.ship.ipfix.elements import FLOW_END_REASON
from cloudtap.ship.ipfix.exporter import IpfixExporter

pytestmark = pytest.mark.oracle
PORT = 4739
FIELDS = ("frame.number", "_ws.expert", "_ws.malformed", "cflow.sequence", "cflow.template_id", "cflow.srcaddr",
          "cflow.dstaddr", "cflow.srcaddrv6", "cflow.dstaddrv6", "cflow.srcport", "cflow.dstport", "cflow.protocol",
          "cflow.octets", "cflow.packets", "cflow.vlanid", "cflow.flow_end_reason", "cflow.tcpflags")  # fmt: skip


def _received(flows: np.ndarray, mtu: int) -> list[bytes]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind(("127.0.0.1", 0))
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        rx.settimeout(2.0)
        ex = IpfixExporter(f"udp://127.0.0.1:{rx.getsockname()[1]}", mtu=mtu, refresh_messages=5)
        assert ex.export(flows) == len(flows)
        ex.close()
        return [rx.recv(65536) for _ in range(ex.counters.messages)]


def _write_pcap(path: Path, datagrams: list[bytes]) -> None:
    with open(path, "wb") as fh:
        fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i, payload in enumerate(datagrams):
            udp = struct.pack("!HHHH", 40000, PORT, 8 + len(payload), 0) + payload
            ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), i & 0xFFFF, 0x4000, 64, 17, 0,
                             b"\x7f\0\0\x01", b"\x7f\0\0\x01")  # fmt: skip
            frame = b"\0" * 12 + b"\x08\x00" + ip + udp
            fh.write(struct.pack("<IIII", 1_700_000_000 + i, 0, len(frame), len(frame)) + frame)


def _tshark(path: Path) -> list[dict[str, list[str]]]:
    cmd = ["tshark", "-r", str(path), "-d", f"udp.port=={PORT},cflow", "-T", "fields", "-E", "separator=\t"]
    for f in FIELDS:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        cells = line.split("\t")
        rows.append({f: (c.split(",") if c else []) for f, c in zip(FIELDS, cells, strict=False)})
    return rows


def _text(hi: int, lo: int, v6: bool) -> str:
    return str(ipaddress.IPv6Address(hi << 64 | lo)) if v6 else str(ipaddress.IPv4Address(lo & 0xFFFFFFFF))


@pytest.mark.parametrize("rel", ["arkime/tests/pcap/arkime_synthetic.pcap", "arkime/tests/pcap/v6-http.pcap"])
def test_cflow_decodes_templates_and_records(rel: str, tmp_path: Path) -> None:
    if shutil.which("tshark") is None:
        pytest.skip("tshark not installed")
    flows = meter_file([capture(rel)], MeterConfig()).flows
    pcap = tmp_path / "export.pcap"
    _write_pcap(pcap, _received(flows, mtu=1400))
    rows = _tshark(pcap)
    assert rows
    for row in rows:
        assert not row["_ws.expert"] and not row["_ws.malformed"], row
    assert {"256", "257"} <= {t for r in rows for t in r["cflow.template_id"]}  # both templates announced
    sequences = [int(r["cflow.sequence"][0]) for r in rows]
    assert sequences[0] == 0 and sequences == sorted(sequences) and sequences[-1] < len(flows)
    got = {k: [v for r in rows for v in r[k]] for k in FIELDS[3:]}
    v6 = flows["ip_ver"] == 6
    f4, f6 = flows[~v6], flows[v6]
    assert got["cflow.srcaddr"] == [_text(int(f["client_hi"]), int(f["client_lo"]), False) for f in f4]
    assert got["cflow.dstaddr"] == [_text(int(f["server_hi"]), int(f["server_lo"]), False) for f in f4]
    assert got["cflow.srcaddrv6"] == [_text(int(f["client_hi"]), int(f["client_lo"]), True) for f in f6]
    assert got["cflow.dstaddrv6"] == [_text(int(f["server_hi"]), int(f["server_lo"]), True) for f in f6]
    assert got["cflow.srcport"] == [str(p) for p in flows["client_port"]]
    assert got["cflow.dstport"] == [str(p) for p in flows["server_port"]]
    assert got["cflow.protocol"] == [str(p) for p in flows["proto"]]
    assert got["cflow.vlanid"] == [str(p) for p in flows["vlan"]]
    # forward then reverse (RFC 5103 element under PEN 29305), record after record
    assert got["cflow.octets"] == _pairs(flows, "bytes_c2s", "bytes_s2c")
    assert got["cflow.packets"] == _pairs(flows, "packets_c2s", "packets_s2c")
    assert [str(int(v, 0)) for v in got["cflow.tcpflags"]] == _pairs(flows, "tcp_flags_c2s", "tcp_flags_s2c")
    assert [int(v) for v in got["cflow.flow_end_reason"]] == [FLOW_END_REASON[c] for c in flows["close_type"]]


def _pairs(flows: np.ndarray, forward: str, reverse: str) -> list[str]:
    out = np.empty(2 * len(flows), dtype=np.int64)
    out[0::2], out[1::2] = flows[forward], flows[reverse]
    return [str(v) for v in out]

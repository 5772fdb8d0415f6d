"""Test helpers for IPFIX: a plain-Python message decoder (RFC 7011 as written) and an nfcapd collector.

The decoder knows nothing of cloudtap's layout: it learns the templates from the messages, so it
checks that what the numba encoder writes is what the templates announce.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

PCAPS = Path(__file__).resolve().parents[4] / "shared" / "pcaps"

#: Public captures exported in the collector tests: TCP and UDP, IPv4 and IPv6, VLAN.
CAPTURES = (
    "zeek/testing/btest/Traces/http/methods.pcap",
    "zeek/testing/btest/Traces/ssh/ssh.pcap",
    "arkime/tests/pcap/v6-http.pcap",
    "suricata-verify/tests/community-id-ipv6/input.pcap",
    "PcapPlusPlus/Tests/Pcap++Test/PcapExamples/raw_ip.pcap",
    "zeek/testing/btest/Traces/dns/mdns.pcap",
    "PcapPlusPlus/Tests/ExamplesTest/pcap_examples/tcp-reassembly.pcap",
    "zeek/testing/btest/Traces/tunnels/gre-aruba.pcap",
    "arkime/tests/pcap/arkime_synthetic.pcap",
)


def capture(rel: str) -> Path:
    """A public capture, or skip the test when it is absent."""
    path = PCAPS / rel
    if not path.is_file():
        pytest.skip(f"capture {rel} not available")
    return path


@dataclass
class Message:
    version: int
    length: int
    export_time: int
    sequence: int
    domain: int
    template_ids: list[int] = field(default_factory=list)
    records: list[tuple[int, dict[tuple[int, int], bytes]]] = field(default_factory=list)


class Decoder:
    """Decode IPFIX messages; templates persist across messages, as a collector keeps them."""

    def __init__(self) -> None:
        self.templates: dict[int, list[tuple[int, int, int]]] = {}  # id -> [(element, pen, length)]

    def decode(self, data: bytes) -> Message:
        version, length, export_time, sequence, domain = struct.unpack_from("!HHIII", data, 0)
        assert version == 10 and length == len(data), (version, length, len(data))
        msg = Message(version, length, export_time, sequence, domain)
        pos = 16
        while pos < length:
            set_id, set_len = struct.unpack_from("!HH", data, pos)
            assert set_len >= 4 and pos + set_len <= length
            body, end = pos + 4, pos + set_len
            if set_id == 2:
                while body + 4 <= end:
                    tid, count = struct.unpack_from("!HH", data, body)
                    body += 4
                    fields = []
                    for _ in range(count):
                        eid, flen = struct.unpack_from("!HH", data, body)
                        body += 4
                        pen = 0
                        if eid & 0x8000:
                            (pen,) = struct.unpack_from("!I", data, body)
                            body += 4
                            eid &= 0x7FFF
                        fields.append((eid, pen, flen))
                    self.templates[tid] = fields
                    msg.template_ids.append(tid)
            elif set_id >= 256:
                fields = self.templates[set_id]
                size = sum(f[2] for f in fields)
                while body + size <= end:
                    rec = {}
                    for eid, pen, flen in fields:
                        rec[(eid, pen)] = data[body : body + flen]
                        body += flen
                    msg.records.append((set_id, rec))
                assert end - body < size  # only padding may remain
            pos = end
        return msg


def uint(raw: bytes) -> int:
    return int.from_bytes(raw, "big")


def address(raw: bytes) -> str:
    return str(ipaddress.ip_address(raw))


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def needs_nfdump() -> None:
    if not (shutil.which("nfcapd") and shutil.which("nfdump")):
        pytest.skip("nfcapd/nfdump not installed (apt-get install nfdump)")


@contextlib.contextmanager
def nfcapd(port: int | None = None) -> Iterator[tuple[int, Path, list[Path]]]:
    """Run nfcapd on loopback; yields (port, directory, files) — ``files`` fills in when it stops."""
    needs_nfdump()
    port = port or free_udp_port()
    directory = Path(tempfile.mkdtemp(prefix="nfcapd-"))
    proc = subprocess.Popen(
        ["nfcapd", "-b", "127.0.0.1", "-p", str(port), "-w", str(directory), "-t", "3600"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    files: list[Path] = []
    try:
        _wait_bound(port, proc)
        yield port, directory, files
    finally:
        time.sleep(0.3)  # let it read what is queued on the socket
        proc.terminate()
        try:
            _, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        log = err.decode(errors="replace")
        assert "Sequence Errors: 0," in log, log  # nfcapd checked every message's sequence number
        assert "Bad Packets: 0" in log, log
        files.extend(sorted(p for p in directory.rglob("nfcapd.*") if "current" not in p.name))
        files.extend(sorted(p for p in directory.rglob("nfcapd.current*")))


def _wait_bound(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"nfcapd exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        out = subprocess.run(["ss", "-Hnul", f"sport = :{port}"], capture_output=True, text=True).stdout
        if out.strip():
            return
        time.sleep(0.05)
    raise RuntimeError("nfcapd did not bind")


def nfdump_flows(files: list[Path]) -> list[dict]:
    """Every record nfcapd stored, as nfdump's JSON (times printed in UTC)."""
    flows: list[dict] = []
    for path in files:
        out = subprocess.run(
            ["nfdump", "-r", str(path), "-o", "json"], capture_output=True, text=True, check=True
        )
        text = out.stdout.strip()
        if text:
            flows.extend(json.loads(text))
    return flows

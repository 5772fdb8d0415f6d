"""`cloudtap meter --format ipfix` into a real nfcapd: nfdump shows the flows `--format jsonl` shows.

nfcapd 1.7 listens on UDP only; the TCP export goes to a small relay here that cuts the stream at
each message's length field and forwards the messages to nfcapd, so nfdump judges the TCP bytes too.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from ipfix_oracle import CAPTURES, capture, needs_nfdump, nfcapd, nfdump_flows
from typer.testing import CliRunner

from cloudtap.cli.main import app

pytestmark = pytest.mark.oracle
runner = CliRunner()


def _jsonl_flows(path: Path, tmp_path: Path) -> Counter[tuple]:
    out = tmp_path / "flows.jsonl"
    result = runner.invoke(app, ["meter", str(path), "--format", "jsonl", "-o", str(out)])
    assert result.exit_code == 0, result.output
    flows: Counter[tuple] = Counter()
    for line in out.read_text().splitlines():
        r = json.loads(line)
        icmp = r["proto"] in (1, 58)
        flows[
            (
                r["proto"], r["client_ip"], 0 if icmp else r["client_port"], r["server_ip"],
                0 if icmp else r["server_port"], r["vlan"], r["packets_c2s"], r["bytes_c2s"],
                r["packets_s2c"], r["bytes_s2c"], r["first_ns"] // 1_000_000, r["last_ns"] // 1_000_000,
            )
        ] += 1  # fmt: skip
    return flows


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000 + 0.5)


def _nfdump_flows(files: list[Path]) -> Counter[tuple]:
    flows: Counter[tuple] = Counter()
    for r in nfdump_flows(files):
        icmp = r["proto"] in (1, 58)
        src = r.get("src4_addr") or r.get("src6_addr")
        dst = r.get("dst4_addr") or r.get("dst6_addr")
        flows[
            (
                r["proto"], src, 0 if icmp else r["src_port"], dst, 0 if icmp else r["dst_port"],
                r.get("src_vlan", 0), r["in_packets"], r["in_bytes"], r.get("out_packets", 0),
                r.get("out_bytes", 0), _ms(r["first"]), _ms(r["last"]),
            )
        ] += 1  # fmt: skip
    return flows


@pytest.mark.parametrize("rel", CAPTURES)
def test_udp_export_equals_jsonl(rel: str, tmp_path: Path) -> None:
    needs_nfdump()
    path = capture(rel)
    expected = _jsonl_flows(path, tmp_path)
    with nfcapd() as (port, _, files):
        result = runner.invoke(
            app, ["meter", str(path), "--format", "ipfix", "-o", f"udp://127.0.0.1:{port}"]
        )
        assert result.exit_code == 0, result.output
    got = _nfdump_flows(files)
    assert sum(expected.values()) > 0
    assert got == expected


class _TcpRelay:
    """Accept one IPFIX-over-TCP stream; forward each message (cut by its length field) over UDP."""

    def __init__(self, udp_port: int) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp_port = udp_port
        self.messages = 0
        self.bad: list[str] = []  # framing problems seen by the relay thread
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        conn, _ = self.listener.accept()
        buf = b""
        with conn:
            while chunk := conn.recv(65536):
                buf += chunk
                while len(buf) >= 4 and len(buf) >= struct.unpack_from("!H", buf, 2)[0]:
                    version, length = struct.unpack_from("!HH", buf, 0)
                    if version != 10 or length < 16:
                        self.bad.append(f"message {self.messages}: version {version}, length {length}")
                        return
                    self.udp.sendto(buf[:length], ("127.0.0.1", self.udp_port))
                    self.messages += 1
                    buf = buf[length:]
        if buf:
            self.bad.append(f"{len(buf)} bytes after the last whole message")

    def close(self) -> None:
        self.thread.join(timeout=10)
        self.listener.close()
        self.udp.close()


@pytest.mark.parametrize("rel", CAPTURES[:3] + CAPTURES[4:5] + CAPTURES[-1:])
def test_tcp_export_equals_jsonl(rel: str, tmp_path: Path) -> None:
    needs_nfdump()
    path = capture(rel)
    expected = _jsonl_flows(path, tmp_path)
    with nfcapd() as (port, _, files):
        relay = _TcpRelay(port)
        result = runner.invoke(
            app, ["meter", str(path), "--format", "ipfix", "-o", f"tcp://127.0.0.1:{relay.port}"]
        )
        assert result.exit_code == 0, result.output
        relay.close()
        assert relay.messages > 0 and not relay.bad, relay.bad
    assert _nfdump_flows(files) == expected


def test_cli_refuses_a_missing_or_bad_target(tmp_path: Path) -> None:
    path = capture(CAPTURES[0])
    for args in ([], ["-o", "http://127.0.0.1:4739"], ["-o", "udp://127.0.0.1"]):
        result = runner.invoke(app, ["meter", str(path), "--format", "ipfix", *args])
        assert result.exit_code == 2, result.output
        assert "ipfix" in result.output


def test_cli_exits_1_when_records_are_lost(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nobody listens
    result = runner.invoke(
        app, ["meter", str(capture(CAPTURES[0])), "--format", "ipfix", "-o", f"tcp://127.0.0.1:{port}"]
    )
    assert result.exit_code == 1, result.output
    assert "50 lost" in result.output

"""Application payloads: the request parser finds exactly the requests the ground truth lists, and
tshark decodes every protocol without malformed packets or expert errors."""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cloudtap.errors import ConfigError
from cloudtap.l7 import parse_file
from cloudtap.l7.records import requests_to_arrow
from cloudtap.synth import SynthResult, write_pcap
from cloudtap.synth.apps import ERRORS
from cloudtap.synth.scenario import scenario_from_dict

#: What the parser and the truth must agree on, request by request.
COMPARED = ("l7_proto", "client_ip", "client_port", "server_ip", "server_port", "req_ns", "resp_ns",
            "latency_us", "request_type", "resource", "host", "status", "code", "error")  # fmt: skip


def _scenario(**top: Any) -> dict[str, Any]:
    return {
        "name": "apps",
        "seed": 11,
        "duration": 90,
        "cloud": {
            "hosts": 2,
            "projects": [
                {
                    "name": "shop",
                    "vlan": 101,
                    "vms": [
                        {"role": "web", "count": 2},
                        {"role": "app", "count": 3},
                        {"role": "db", "count": 2},
                        {"role": "cache", "count": 1},
                        {"role": "dns", "count": 1},
                    ],
                }
            ],
        },  # fmt: skip
        "services": [
            {
                "name": "web-api",
                "app": "http",
                "clients": "shop/web",
                "servers": "shop/app",
                "port": 8080,
                "rate": 2,
                "requests": [1, 4],
                "request_bytes": [150, 1200],
                "response_bytes": [200, 6000],
                "errors": 0.05,
            },
            {
                "name": "orders-db",
                "app": "pgsql",
                "clients": "shop/app",
                "servers": "shop/db",
                "port": 5432,
                "rate": 2,
                "requests": [2, 8],
                "request_bytes": [60, 600],
                "response_bytes": [80, 3000],
                "errors": 0.05,
            },
            {
                "name": "legacy-db",
                "app": "mysql",
                "clients": "shop/app",
                "servers": "shop/db",
                "port": 3306,
                "rate": 1,
                "requests": [1, 5],
                "request_bytes": [60, 300],
                "response_bytes": [20, 2000],
                "errors": 0.05,
                "templates": ["SELECT name FROM users WHERE id = {n}", "DELETE FROM carts WHERE id = {n}"],
            },
            {
                "name": "cache",
                "app": "redis",
                "clients": "shop/app",
                "servers": "shop/cache",
                "port": 6379,
                "rate": 2,
                "requests": [1, 10],
                "request_bytes": [30, 200],
                "response_bytes": [10, 2000],
                "errors": 0.05,
            },
            {
                "name": "dns",
                "app": "dns",
                "proto": "udp",
                "clients": "*",
                "servers": "shop/dns",
                "port": 53,
                "rate": 3,
                "request_bytes": [28, 60],
                "response_bytes": [44, 220],
                "errors": 0.05,
            },
            {"name": "plain", "clients": "shop/web", "servers": "shop/db", "port": 7000, "rate": 0.5},
        ],  # fmt: skip
        **top,
    }


def _rows(table: Any) -> Counter[tuple[Any, ...]]:
    return Counter(zip(*[table[c].to_pylist() for c in COMPARED], strict=True))


@pytest.fixture(scope="module")
def apps(tmp_path_factory: pytest.TempPathFactory) -> SynthResult:
    return write_pcap(scenario_from_dict(_scenario()), tmp_path_factory.mktemp("apps") / "apps.pcap")


@pytest.mark.parametrize(
    "top", [{}, {"encapsulation": "vxlan", "ts_precision": "us"}], ids=["plain", "vxlan-us"]
)
def test_the_parser_finds_exactly_the_truths_requests(top: dict[str, Any], tmp_path: Path) -> None:
    made = write_pcap(scenario_from_dict(_scenario(**top)), tmp_path / "apps.pcap")
    assert made.requests is not None
    parsed = requests_to_arrow(parse_file(made.path).requests)
    expected = _rows(made.requests)
    got = _rows(parsed)
    assert got == expected, (list((expected - got).items())[:3], list((got - expected).items())[:3])
    protocols = Counter(made.requests["l7_proto"].to_pylist())
    assert set(protocols) == {"http", "pgsql", "mysql", "redis", "dns"} and min(protocols.values()) > 50


def test_truth_has_every_outcome_and_errors_at_the_configured_share(apps: SynthResult) -> None:
    t = apps.requests
    assert t is not None
    status = np.asarray(t["status"].to_pylist())
    proto = np.asarray(t["l7_proto"].to_pylist())
    answered = np.isin(status, ["ok", "client_error", "server_error"])
    share = np.isin(status, ["client_error", "server_error"])[answered].mean()
    assert 0.02 < share < 0.10  # 5 % configured
    for name, variants in ERRORS.items():
        errors = set(
            zip(status[proto == name], np.asarray(t["error"].to_pylist())[proto == name], strict=True)
        )
        assert {(v.status, v.error) for v in variants} <= errors, name
    assert {"ok", "timeout"} <= set(status)  # server resets leave requests unanswered
    lat = t["latency_us"].to_numpy()
    assert (lat[answered] >= 0).all() and (lat[~answered] == -1).all()
    assert set(t["service"].to_pylist()) == {"web-api", "orders-db", "legacy-db", "cache", "dns"}
    resources = set(t["resource"].to_pylist())
    assert "SELECT name FROM users WHERE id = ?" in resources  # the service's own templates
    assert any(r.startswith("/api/orders/") for r in resources)  # literals vary per request


def test_messages_respect_the_service_byte_ranges(apps: SynthResult) -> None:
    """Payload bytes per request stay within the declared ranges (raised to the protocol's minimum)."""
    t = apps.truth.to_pylist()
    db = [r for r in t if r["service"] == "orders-db" and r["close_type"] == "fin"]
    assert db
    for r in db:
        assert r["payload_bytes_c2s"] <= 8 * 600 + 64  # requests: 2..8 statements of <= 600 bytes
        assert r["payload_bytes_c2s"] >= 2 * 60


@pytest.mark.oracle
@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
def test_tshark_decodes_every_protocol_without_errors(apps: SynthResult) -> None:
    def tshark(*args: str) -> list[str]:
        out = subprocess.run(["tshark", "-n", "-r", str(apps.path), "-o", "tcp.check_checksum:TRUE",
                              "-o", "udp.check_checksum:TRUE", *args], capture_output=True, text=True, check=True)  # fmt: skip
        return [line for line in out.stdout.splitlines() if line]

    assert (
        tshark("-Y", "_ws.malformed || _ws.expert.severity >= error", "-T", "fields", "-e", "frame.number")
        == []
    )
    t = apps.requests
    assert t is not None
    protos = Counter(t["l7_proto"].to_pylist())
    # one tshark request per truth request: HTTP request lines, DNS queries, PostgreSQL simple queries,
    # MySQL COM_QUERY, RESP arrays sent to the server
    assert len(tshark("-Y", "http.request", "-T", "fields", "-e", "frame.number")) == protos["http"]
    assert len(tshark("-Y", "dns.flags.response == 0", "-T", "fields", "-e", "frame.number")) == protos["dns"]
    assert len(tshark("-Y", "pgsql.query", "-T", "fields", "-e", "frame.number")) == protos["pgsql"]
    assert len(tshark("-Y", "mysql.command == 3", "-T", "fields", "-e", "frame.number")) == protos["mysql"]
    assert (
        len(tshark("-Y", "resp and tcp.dstport == 6379", "-T", "fields", "-e", "frame.number"))
        == protos["redis"]
    )


def test_dns_needs_udp_and_templates_are_checked() -> None:
    bad_dns = _scenario()
    bad_dns["services"][4]["proto"] = "tcp"
    with pytest.raises(ConfigError, match="app dns needs proto udp"):
        scenario_from_dict(bad_dns)
    bad_http = _scenario()
    bad_http["services"][0]["templates"] = ["orders/{n}"]
    with pytest.raises(ConfigError, match="METHOD /path"):
        scenario_from_dict(bad_http)


def test_contention_must_name_a_known_service() -> None:
    data = _scenario(incidents=[{"kind": "backup", "from_vm": "shop/db-01", "to_vm": "shop/cache-01",
                                 "contention": [{"service": "nope", "server_ms": [10, 80]}]}])  # fmt: skip
    with pytest.raises(ConfigError, match="unknown service 'nope'"):
        scenario_from_dict(data)

"""Requests against DeepFlow's expected results (``reference/deepflow/**/*.result``).

Per request, in order: the request type, the resource (SQL as its fingerprint; a resource cut by
the first segment must be a prefix of DeepFlow's), and the status of the response. Where DeepFlow
classifies differently by choice (documented in docs/flow-semantics.md) the pair is listed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from deepflow_results import naive_fingerprint, read_results
from l7_frames import texts
from l7_oracle import SHARED_PCAPS

from cloudtap.l7 import parse_file
from cloudtap.schema.request import REQ_STATUS_NAMES, REQF_RESOURCE_CUT

_BASE = "agent/resources/test/flow_generator"
_PROTOCOLS = ("dns", "http", "mysql", "redis")
#: (capture stem, request index) -> why the status differs (DeepFlow's choice, or cloudtap's flow key).
_VLAN_SPLIT = "requests tagged VLAN 3875, responses untagged: two flows (the meter's key)"
STATUS_CHOICES = {
    ("nxdomain", 2): "NXDomain for a search-list expansion: DeepFlow ok, cloudtap client_error",
    ("mysql-error", 2): "ERR 1049 (SQLSTATE 42000): DeepFlow server_error, cloudtap client_error",
    ("binary-in-sql", 0): _VLAN_SPLIT,
    ("binary-in-sql", 1): _VLAN_SPLIT,
}
#: DeepFlow parses what cloudtap leaves out (documented limits).
NOT_PARSED = {"mysql-compressed-response": "MySQL compressed protocol is not parsed"}
_COMPARED_MYSQL = {"QUERY", "PREPARE", "EXECUTE", "INIT_DB", "PING"}


def _cases() -> list[tuple[str, Path, Path]]:
    ref = SHARED_PCAPS / "reference" / "deepflow" / _BASE
    out = []
    for proto in _PROTOCOLS:
        for result in sorted((ref / proto).glob("*.result")):
            pcap = SHARED_PCAPS / "deepflow" / _BASE / proto / f"{result.stem}.pcap"
            if pcap.is_file():
                out.append((proto, result, pcap))
    return out


@pytest.mark.parametrize(("proto", "result", "pcap"), _cases(), ids=lambda v: getattr(v, "stem", v))
def test_requests_match_deepflow(proto: str, result: Path, pcap: Path) -> None:
    want = read_results(result, proto)
    records = parse_file(pcap).requests
    if proto == "mysql":
        keep = [t in _COMPARED_MYSQL for t in texts(records, "request_type")]
        records = records[keep]
    if result.stem in NOT_PARSED:
        assert len(records) < len(want)
        return
    assert len(records) == len(want), f"{result.stem}: {len(records)} requests, DeepFlow {len(want)}"
    kinds, resources = texts(records, "request_type"), texts(records, "resource")
    for i, (rtype, resource, response) in enumerate(want):
        assert kinds[i] == rtype
        if rtype == "EXECUTE" and not resource:
            pass  # DeepFlow gives no text for EXECUTE; cloudtap the fingerprint of its PREPARE
        elif records["flags"][i] & REQF_RESOURCE_CUT:
            assert resource.startswith(resources[i]), (resources[i], resource)
        else:
            assert resources[i] == resource
        if response is None:
            continue
        if (result.stem, i) in STATUS_CHOICES:
            assert REQ_STATUS_NAMES[records["status"][i]] != response[0]
            continue
        assert REQ_STATUS_NAMES[records["status"][i]] == response[0]
        if proto == "redis":
            assert texts(records, "error")[i] == response[1]
        elif proto in ("http", "dns"):
            assert records["code"][i] == response[1]


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM t WHERE a = 1 AND b = 'x''y' AND c IN (1, 2.5, -3)",
        '  insert into  t2 (c1,c2) values ("a\\"b", 0x1F);  ',
        "select col1, t3.x2 from t3 where name like '%abc%' limit 10",
        "UPDATE `t` SET v=v+1 WHERE id=$1",
        "SELECT a FROM t ORDER BY a LIMIT 20 OFFSET 40",
    ],
)
def test_fingerprint_kernel_matches_reference(sql: str) -> None:
    from l7_frames import MS, T0, Conversation, parse_frames
    from test_request_parser import mysql_packet

    c = Conversation(sport=3306)
    c.request(T0, mysql_packet(0, b"\x03" + sql.encode()))
    c.response(T0 + MS, mysql_packet(1, b"\x00\x00\x00\x02\x00"))
    records, _ = parse_frames(c.frames)
    assert texts(records, "resource") == [naive_fingerprint(sql)]

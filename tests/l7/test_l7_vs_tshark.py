"""HTTP and DNS requests against tshark on every shared capture that has them.

Same requests (time of the first segment, method/type, uri/name), same status codes, and the same
``http.time`` / ``dns.time`` to the microsecond. Captures where cloudtap and tshark differ by a
documented choice (docs/flow-semantics.md, "Application requests") are listed with the reason; for
those the test only requires that parsing succeeds. Everything else must match exactly.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from l7_oracle import SHARED_PCAPS, TSHARK, compare_dns, compare_http, manifest_captures

from cloudtap.l7 import parse_file

pytestmark = pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")

#: capture path (relative to ../shared/pcaps) -> why cloudtap and tshark differ there.
KNOWN_DIFFERENCES = {
    "zeek/testing/btest/Traces/tunnels/gre-aruba.pcap": "decoder: Aruba GRE (0x8200) is not decapsulated",
    "zeek/testing/btest/Traces/tunnels/ayiya3.pcap": "decoder: AYIYA tunnels are not decapsulated",
    "zeek/testing/btest/Traces/tunnels/gtp/gtp1_gn_normal_incl_fragmentation.pcap": (
        "decoder: an outer IP fragment is not decapsulated (tshark opens the GTP-U tunnel in the first fragment)"
    ),
    "arkime/tests/pcap/socks5-http-302-frag.pcap": "IP fragments are not reassembled (first fragment only)",
    "zeek/testing/btest/Traces/http/100-continue.pcap": "tshark times the interim 100 Continue; cloudtap the final response",
    "zeek/testing/btest/Traces/http/methods.pcap": "malformed request lines (no version, no space) tshark accepts",
    "deepflow/agent/resources/test/common/decapsulate_erspan1.pcap": "tshark skips segments it flags out-of-order",
    "zeek/testing/btest/Traces/tcp/retransmit-timeout.pcapng": "request whose headers never complete: tshark drops it",
    "PcapPlusPlus/Tests/Pcap++Test/PcapExamples/unidirectional_tcp_stream_with_missing_packet.pcap": "request whose headers never complete: tshark drops it",
    "PcapPlusPlus/Tests/Pcap++Test/PcapExamples/4KHttpRequests.pcap": "request whose headers never complete: tshark drops it",
    "deepflow/agent/resources/test/flow_generator/http/istio-tcp-frag.pcap": "response split before its headers end: tshark pairs no status",
    "PcapPlusPlus/Tests/Pcap++Test/PcapExamples/raw_ip.pcap": "response split before its headers end: tshark pairs no status",
    "PcapPlusPlus/Tests/Pcap++Test/PcapExamples/example.pcap": "SSDP/UPnP HTTP over TCP and split responses tshark leaves unparsed",
    "arkime/tests/pcap/arkime_synthetic.pcap": "synthetic: LLMNR/mDNS-style queries tshark does not dissect; id 0 queries",
    "zeek/testing/btest/Traces/tunnels/gre-sample.pcap": "repeated query with a pending id: one request (tshark: one per copy)",
    "zeek/testing/btest/Traces/tunnels/geneve-vxlan-dns-truncated.pcap": "truncated response: cloudtap pairs it by id, tshark does not time it",
    "tcpdump/tests/LINKTYPE_IPV4_invalid.pcap": "decoder: invalid IPv4 header",
    "zeek/doc/advanced/devel/plugins/connkey-vxlan-fivetuple-plugin-src/Traces/vxlan-overlapping-http-get.pcap": (
        "one 5-tuple in three VXLAN VNIs: three tenants' requests (keyed by VNI); tshark: one conversation"
    ),
    "zeek/testing/btest/Traces/tunnels/gre-pptp.pcap": "PPTP GRE call id differs per direction: query and answer are two flows",
}


def _captures(protocol: str) -> list[Path]:
    if not (SHARED_PCAPS / "MANIFEST.csv").is_file():
        return []
    return manifest_captures(SHARED_PCAPS, protocol)


def _check(path: Path, shared: Path, compare) -> None:  # type: ignore[no-untyped-def]
    result = parse_file(path)
    assert not result.partial
    c = compare(path, result.requests)
    rel = str(path.relative_to(shared))
    if rel in KNOWN_DIFFERENCES:
        return
    assert c.requests_match and c.responses_match and c.times_match, f"{rel}: {c.diff()[:2000]}"


@pytest.mark.parametrize("path", _captures("http"), ids=lambda p: p.name)
def test_http_matches_tshark(path: Path, shared_pcaps: Path) -> None:
    _check(path, shared_pcaps, compare_http)


@pytest.mark.parametrize("path", _captures("dns"), ids=lambda p: p.name)
def test_dns_matches_tshark(path: Path, shared_pcaps: Path) -> None:
    _check(path, shared_pcaps, compare_dns)

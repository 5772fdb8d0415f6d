"""tshark as the oracle of HTTP and DNS requests: fields per frame, compared with ``parse_file``.

tshark runs with TCP reassembly off (``tcp.desegment_tcp_streams:FALSE``): like cloudtap, it then
dissects each message from the segment that starts it, and ``http.time`` / ``dns.time`` are the
times between the first segments of request and response.
"""

from __future__ import annotations

import csv
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cloudtap.schema.request import L7_DNS, L7_HTTP, RESOURCE_BYTES

TSHARK = shutil.which("tshark")
#: The shared captures (as ``tests/conftest.py`` finds them), for parametrising at collection time.
SHARED_PCAPS = Path(__file__).resolve().parents[2].parent / "shared" / "pcaps"
NO_REASSEMBLY = ("-o", "tcp.desegment_tcp_streams:FALSE")


def manifest_captures(pcaps: Path, protocol: str) -> list[Path]:
    """Captures whose MANIFEST ``protocols`` column lists ``protocol`` (and that exist)."""
    out = []
    with open(pcaps / "MANIFEST.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            if protocol in row["protocols"].split(","):
                path = pcaps / row["path"]
                if path.is_file():
                    out.append(path)
    return out


def _tshark(path: Path, display: str, fields: list[str], reassembly: bool = False) -> list[list[str]]:
    options = () if reassembly else NO_REASSEMBLY
    cmd = [TSHARK or "tshark", "-n", "-r", str(path), *options, "-Y", display, "-T", "fields"]
    for f in fields:
        cmd += ["-e", f]
    cmd += ["-E", "separator=\t", "-E", "occurrence=f"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    return [line.split("\t") for line in res.stdout.splitlines() if line]


def _us(epoch: str) -> int:
    sec, _, frac = epoch.partition(".")
    return int(sec) * 1_000_000 + int((frac + "000000")[:6])


def _cut(text: str) -> str:
    """A resource as cloudtap's fixed-width field holds it (first RESOURCE_BYTES bytes)."""
    return text.encode()[:RESOURCE_BYTES].decode("latin-1")


def _dur_us(seconds: str) -> int:
    return round(float(seconds) * 1e6)


@dataclass
class Comparison:
    """Requests and responses of one capture, as multisets, from both sides."""

    tshark_requests: Counter = field(default_factory=Counter)
    ours_requests: Counter = field(default_factory=Counter)
    tshark_responses: Counter = field(default_factory=Counter)
    ours_responses: Counter = field(default_factory=Counter)
    tshark_times: Counter = field(default_factory=Counter)
    ours_times: Counter = field(default_factory=Counter)

    @property
    def requests_match(self) -> bool:
        return self.tshark_requests == self.ours_requests

    @property
    def responses_match(self) -> bool:
        return self.tshark_responses == self.ours_responses

    @property
    def times_match(self) -> bool:
        """Every response time tshark measured is ours too (to the microsecond)."""
        return not (self.tshark_times - self.ours_times)

    def diff(self) -> str:
        return (
            f"requests only tshark {dict(self.tshark_requests - self.ours_requests)} "
            f"only ours {dict(self.ours_requests - self.tshark_requests)}; "
            f"responses only tshark {dict(self.tshark_responses - self.ours_responses)} "
            f"only ours {dict(self.ours_responses - self.tshark_responses)}; "
            f"times only tshark {dict(self.tshark_times - self.ours_times)}"
        )


def _text(values: np.ndarray) -> list[str]:
    return [v.decode("latin-1") for v in values.tolist()]


def _first_segment_times(path: Path) -> dict[str, int]:
    return {num: _us(t) for num, t in _tshark(path, "frame", ["frame.number", "frame.time_epoch"])}


def compare_http(path: Path, records: np.ndarray) -> Comparison:
    """Requests and statuses against tshark with reassembly, response times without.

    Request = (time µs of its first segment, method, uri); response = (request time µs, status).
    ``times`` pairs (request time µs, http.time µs) come from tshark without TCP reassembly, where
    both are first-segment times; only requests tshark could parse that way are compared.
    """
    c = Comparison()
    frame_us = _first_segment_times(path)
    fields = ["frame.number", "http.request.method", "http.request.uri", "http.response.code", "http.request_in",
              "tcp.segment"]  # fmt: skip
    req_time: dict[str, int] = {}
    for num, method, uri, code, req_in, first_seg in _tshark(
        path, "http.request or http.response", fields, reassembly=True
    ):
        t = frame_us[first_seg or num]
        if method:
            req_time[num] = t
            c.tshark_requests[(t, method, _cut(uri))] += 1
        elif code and req_in in req_time:
            c.tshark_responses[(req_time[req_in], int(code))] += 1
    fields = ["frame.number", "http.request.method", "http.request.uri", "http.time", "http.request_in"]
    single = Counter()
    for num, method, uri, delta, req_in in _tshark(path, "http.request or http.response", fields):
        if method:
            single[(frame_us[num], method, _cut(uri))] += 1
        elif delta and req_in in frame_us:
            c.tshark_times[(frame_us[req_in], _dur_us(delta))] += 1
    c.tshark_requests |= single  # a request tshark dissects in either mode (max of the counts)
    mine = records[records["l7_proto"] == L7_HTTP]
    for t, m, u in zip(
        (mine["req_ns"] // 1000).tolist(), _text(mine["request_type"]), _text(mine["resource"]), strict=True
    ):
        c.ours_requests[(t, m, u)] += 1
    answered = mine[mine["resp_ns"] > 0]
    req_us = (answered["req_ns"] // 1000).tolist()
    lat = ((answered["resp_ns"] - answered["req_ns"] + 500) // 1000).tolist()
    for t, code, d in zip(req_us, answered["code"].tolist(), lat, strict=True):
        c.ours_responses[(t, code)] += 1
        c.ours_times[(t, d)] += 1
    return c


def compare_dns(path: Path, records: np.ndarray) -> Comparison:
    """Query = (time µs, id, name); response = (query time µs, id, rcode, dns.time µs)."""
    c = Comparison()
    fields = ["frame.number", "frame.time_epoch", "dns.id", "dns.flags.response", "dns.qry.name", "dns.flags.rcode",
              "dns.time", "dns.response_to", "dns.retransmission"]  # fmt: skip
    rows = _tshark(path, "dns", fields)
    times = {r[0]: _us(r[1]) for r in rows}
    for _num, epoch, tid, resp, name, rcode, delta, resp_to, retrans in rows:
        if not tid:
            continue
        if resp in ("0", "False") and retrans not in ("1", "True"):
            c.tshark_requests[(_us(epoch), int(tid, 0), _cut(name))] += 1
        elif resp in ("1", "True") and delta and resp_to in times:
            c.tshark_responses[(times[resp_to], int(tid, 0), int(rcode), _dur_us(delta))] += 1
    mine = records[records["l7_proto"] == L7_DNS]
    for t, tid, name in zip(
        (mine["req_ns"] // 1000).tolist(), mine["request_id"].tolist(), _text(mine["resource"]), strict=True
    ):
        c.ours_requests[(t, tid, name)] += 1
    answered = mine[mine["resp_ns"] > 0]
    for t, tid, code, lat in zip(
        (answered["req_ns"] // 1000).tolist(),
        answered["request_id"].tolist(),
        answered["code"].tolist(),
        ((answered["resp_ns"] - answered["req_ns"] + 500) // 1000).tolist(),
        strict=True,
    ):
        c.ours_responses[(t, tid, code, lat)] += 1
    return c

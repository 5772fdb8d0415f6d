"""Request counts on flow records: ``RequestParser.annotate_flows`` and ``parse_file(meter=True)``.

The oracle is the request records themselves: per flow (5-tuple + observation point, either
orientation) the counts the meter's records carry must add up to the records of that flow.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from l7_frames import MS, T0, Conversation, frames_batch
from l7_oracle import manifest_captures
from test_request_parser import dns_msg, http_get, http_resp

from cloudtap.decode import decode_frames
from cloudtap.errors import ConfigError
from cloudtap.l7 import RequestConfig, RequestParser, parse_file
from cloudtap.l7.pipeline import RequestPipeline, period_slices, with_flow_counts
from cloudtap.meter import Meter, MeterConfig
from cloudtap.schema.flow import CLOSE_FIN, CLOSE_FORCED, CLOSE_ONGOING, CLOSE_TIMEOUT, FLOW_DTYPE
from cloudtap.schema.request import REQ_OK

COUNT_FIELDS = ("requests", "request_errors", "requests_answered", "request_latency_sum_us")


def _key(
    a_hi: int, a_lo: int, a_port: int, b_hi: int, b_lo: int, b_port: int, proto: int, iface: int
) -> tuple:
    x, y = (int(a_hi), int(a_lo), int(a_port)), (int(b_hi), int(b_lo), int(b_port))
    return min(x, y), max(x, y), int(proto), int(iface)


def expected_counts(requests: np.ndarray) -> dict[tuple, list[int]]:
    """Per flow: requests, errors, answered, latency sum of the answered, from the request records."""
    out: dict[tuple, list[int]] = {}
    for r in requests:
        k = _key(r["client_hi"], r["client_lo"], r["client_port"], r["server_hi"], r["server_lo"],
                 r["server_port"], r["proto"], r["interface"])  # fmt: skip
        c = out.setdefault(k, [0, 0, 0, 0])
        answered = int(r["resp_ns"]) > 0
        c[0] += 1
        c[1] += int(r["status"]) != REQ_OK
        c[2] += answered
        c[3] += max(int(r["latency_us"]), 0) if answered else 0
    return out


def carried_counts(flows: np.ndarray) -> dict[tuple, list[int]]:
    """Per flow: the four count fields summed over the flow's records (flows without requests left out)."""
    out: dict[tuple, list[int]] = {}
    for f in flows[flows["requests"] > 0]:
        k = _key(f["client_hi"], f["client_lo"], f["client_port"], f["server_hi"], f["server_lo"],
                 f["server_port"], f["proto"], f["interface"])  # fmt: skip
        c = out.setdefault(k, [0, 0, 0, 0])
        for i, name in enumerate(COUNT_FIELDS):
            c[i] += int(f[name])
    return out


@pytest.mark.parametrize("protocol", ["http", "mysql", "dns"])
def test_flow_records_carry_the_requests_of_real_captures(shared_pcaps: Path, protocol: str) -> None:
    paths = manifest_captures(shared_pcaps, protocol)
    if not paths:
        pytest.skip(f"no {protocol} capture in ../shared/pcaps")
    exact = requests = 0
    for path in paths:
        result = parse_file(path, meter=True)
        late = result.stats["flow_counts_late"]
        # Every request is on exactly one flow record, or counted late (visible), never lost.
        assert int(result.flows["requests"].sum()) + late == len(result.requests), path
        assert (result.flows["request_errors"] <= result.flows["requests"]).all()
        assert (result.flows["requests_answered"] <= result.flows["requests"]).all()
        if late == 0:
            assert carried_counts(result.flows) == expected_counts(result.requests), path
            exact += 1
            requests += len(result.requests)
    assert exact >= 1 and requests > 0  # not vacuous: captures compared flow by flow


def answered_by_record(flows: np.ndarray, requests: np.ndarray, period_ns: int) -> np.ndarray | None:
    """Oracle: answered requests per flow record, each on the first record of its meter flow (the latest
    flow of its key started by the request) whose period reaches the response's, else the flow's last record.
    None when a key holds flows told apart only by VLAN or tunnel id (request records do not carry them)."""
    by_key: dict[tuple, list[int]] = {}
    tunnels: dict[tuple, set[tuple[int, int]]] = {}
    for i, f in enumerate(flows):
        k = _key(f["client_hi"], f["client_lo"], f["client_port"], f["server_hi"], f["server_lo"],
                 f["server_port"], f["proto"], f["interface"])  # fmt: skip
        by_key.setdefault(k, []).append(i)
        tunnels.setdefault(k, set()).add((int(f["vlan"]), int(f["tunnel_id"])))
    if any(len(t) > 1 for t in tunnels.values()):
        return None
    out = np.zeros(len(flows), np.int64)
    for r in requests[requests["resp_ns"] > 0]:
        k = _key(r["client_hi"], r["client_lo"], r["client_port"], r["server_hi"], r["server_lo"],
                 r["server_port"], r["proto"], r["interface"])  # fmt: skip
        rows = sorted(by_key[k], key=lambda i: (int(flows[i]["flow_id"]), int(flows[i]["record_seq"])))
        started = [i for i in rows if int(flows[i]["start_ns"]) <= int(r["req_ns"])]
        flow_id = int(flows[started[-1]]["flow_id"]) if started else int(flows[rows[0]]["flow_id"])
        rows = [i for i in rows if int(flows[i]["flow_id"]) == flow_id]
        period = int(r["resp_ns"]) // period_ns
        out[next((i for i in rows if int(flows[i]["last_ns"]) // period_ns >= period), rows[-1])] += 1
    return out


def test_answered_requests_land_on_the_record_of_their_period(shared_pcaps: Path) -> None:
    paths = sorted({p for proto in ("http", "mysql", "dns") for p in manifest_captures(shared_pcaps, proto)})
    if not paths:
        pytest.skip("no HTTP/MySQL/DNS capture in ../shared/pcaps")
    period_ns = int(MeterConfig().record_interval_s * 1e9)
    compared = periodic = 0
    for path in paths:
        result = parse_file(path, meter=True)
        if result.stats["flow_counts_late"]:
            continue
        want = answered_by_record(result.flows, result.requests, period_ns)
        if want is None:
            continue
        assert want.tolist() == result.flows["requests_answered"].tolist(), path
        compared += 1
        periodic += int((result.flows["record_seq"] > 0).sum() > 0 and want.sum() > 0)
    assert compared >= 10 and periodic >= 3  # captures whose flows have several records with requests


def _http_flow_parser(config: RequestConfig, answered: int = 2, pending: int = 0) -> RequestParser:
    c = Conversation()
    t = T0
    for k in range(answered):
        c.request(t, http_get(f"/ok{k}"))
        c.response(t + 3 * MS, http_resp(200 if k % 2 == 0 else 500))
        t += 10 * MS
    for k in range(pending):
        c.request(t + k * MS, http_get(f"/wait{k}"))
    parser = RequestParser(config)
    batch = frames_batch(c.frames)
    parser.add(batch, decode_frames(batch))
    return parser


def _record(client: tuple[str, int], server: tuple[str, int], close_type: int = CLOSE_ONGOING) -> np.ndarray:
    rec = np.zeros(1, FLOW_DTYPE)
    for side, (ip, port) in (("client", client), ("server", server)):
        rec[f"{side}_hi"] = 0
        rec[f"{side}_lo"] = 0xFFFF00000000 | int.from_bytes(bytes(int(x) for x in ip.split(".")), "big")
        rec[f"{side}_port"] = port
    rec["proto"] = 6
    rec["close_type"] = close_type
    return rec


def test_counts_move_once_in_either_orientation() -> None:
    parser = _http_flow_parser(RequestConfig(count_hold_s=600))
    swapped = _record(("10.0.0.2", 80), ("10.0.0.1", 40000))  # the meter's client is the parser's server
    assert parser.annotate_flows(swapped) == 1
    assert [int(swapped[0][n]) for n in COUNT_FIELDS] == [2, 1, 2, 6000]
    again = _record(("10.0.0.1", 40000), ("10.0.0.2", 80))
    assert parser.annotate_flows(again) == 1
    assert [int(again[0][n]) for n in COUNT_FIELDS] == [0, 0, 0, 0]  # moved, not copied
    other = _record(("10.0.0.1", 40001), ("10.0.0.2", 80))
    assert parser.annotate_flows(other) == 0 and int(other["requests"][0]) == 0


def test_a_request_concluded_after_the_final_record_is_late() -> None:
    parser = _http_flow_parser(RequestConfig(count_hold_s=600), answered=1, pending=1)
    final = _record(("10.0.0.1", 40000), ("10.0.0.2", 80), CLOSE_FIN)
    parser.annotate_flows(final)
    assert int(final["requests"][0]) == 1  # the answered one; the pending one is not concluded yet
    parser.flush()  # the pending request ends unanswered, after its flow's final record
    assert parser.stats["flow_counts_late"] == 1
    assert len(parser.records()) == 2


def test_a_final_record_forgets_an_idle_flow_and_unclaimed_counts_expire() -> None:
    parser = _http_flow_parser(RequestConfig(count_hold_s=600))
    parser.annotate_flows(_record(("10.0.0.1", 40000), ("10.0.0.2", 80), CLOSE_FIN))
    assert parser.stats["flows"] == 0
    held = _http_flow_parser(RequestConfig(count_hold_s=10, idle_s=1))
    held.tick(T0 + 5_000 * MS)
    assert held.expire_counts() == 0 and held.stats["flows"] == 1  # idle, but its counts wait for a record
    held.tick(T0 + 11_000 * MS)
    assert held.expire_counts() == 2 and held.stats["flows"] == 0
    assert held.stats["flow_counts_late"] == 2


def test_without_flow_counts_idle_flows_go_as_before() -> None:
    parser = _http_flow_parser(RequestConfig(idle_s=1))  # count_hold_s = 0: no flow records expected
    parser.tick(T0 + 5_000 * MS)
    assert parser.stats["flows"] == 0 and parser.expire_counts() == 0
    assert parser.stats["flow_counts_late"] == 0


@pytest.mark.parametrize("per_minute", [True, False])
def test_each_periodic_record_carries_the_requests_of_its_period(per_minute: bool) -> None:
    """A request is counted on the record of the period it concluded in, though the parser sees each batch
    (here: the next minute's requests) before the meter closes the previous period's record."""
    base = (T0 // (60 * 1000 * MS) + 1) * 60 * 1000 * MS  # a record-interval boundary
    c = Conversation()
    groups = []
    for minute in range(3):
        start = len(c.frames)
        for k in range(minute + 1):  # 1, 2, 3 requests in minutes 0, 1, 2
            t = base + minute * 60_000 * MS + 5_000 * MS + k * 100 * MS
            c.request(t, http_get(f"/{minute}/{k}"))
            c.response(t + 2 * MS, http_resp(200))
        groups.append(c.frames[start:])
    meter_config = MeterConfig(record_interval_s=60, key_by_interface=True)
    parser = RequestParser(with_flow_counts(RequestConfig(), meter_config))
    flows: list[np.ndarray] = []

    def on_records(records: np.ndarray) -> None:
        parser.annotate_flows(records)
        flows.append(records)

    meter = Meter(meter_config, on_records=on_records)
    pipeline = RequestPipeline(meter, parser)
    batches = [frames_batch(group) for group in groups] if per_minute else [frames_batch(c.frames)]
    for batch in batches:
        for part in period_slices(batch, 60 * 1000 * MS):  # one minute in one batch: cut at the boundaries
            pipeline.feed(part)
            meter.drain()
            parser.expire_counts()
    parser.flush()
    meter.flush()
    parser.release_counts()
    records = np.concatenate(flows)
    records = records[np.argsort(records["record_seq"])]
    assert records["requests"].tolist() == [1, 2, 3]
    assert records["requests_answered"].tolist() == [1, 2, 3]
    assert records["request_latency_sum_us"].tolist() == [2000, 4000, 6000]
    assert parser.stats["flow_counts_late"] == 0


def _meter_and_parse(batch_frames: list, meter_config: MeterConfig) -> tuple[np.ndarray, dict[str, int]]:
    parser = RequestParser(with_flow_counts(RequestConfig(), meter_config))
    flows: list[np.ndarray] = []

    def on_records(records: np.ndarray) -> None:
        parser.annotate_flows(records)
        flows.append(records)

    meter = Meter(meter_config, on_records=on_records)
    pipeline = RequestPipeline(meter, parser)
    for part in period_slices(frames_batch(batch_frames), int(meter_config.record_interval_s * 1e9)):
        pipeline.feed(part)
        meter.drain()
        parser.expire_counts()
    parser.flush()
    meter.flush()
    parser.release_counts()
    return np.concatenate(flows), parser.stats


def test_a_key_reused_after_the_idle_timeout_keeps_each_flows_requests() -> None:
    """A resolver asking from one port: after 70 s of silence the meter ends the UDP flow and starts a new
    one; the parser (one flow per key) sees the new query before the meter sends the old flow's final record."""
    c = Conversation(cport=32795, sport=53, tcp=False)
    t = T0 + 10 * 1000 * MS
    for k, when in enumerate((t, t + 1000 * MS, t + 71_000 * MS)):
        c.request(when, dns_msg(k + 1, f"q{k}.example"))
        c.response(when + 5 * MS, dns_msg(k + 1, f"q{k}.example", response=True))
    records, stats = _meter_and_parse(c.frames, MeterConfig(record_interval_s=600, key_by_interface=True))
    records = records[np.argsort(records["flow_id"])]
    assert len(records) == 2 and records["close_type"].tolist() == [CLOSE_TIMEOUT, CLOSE_FORCED]
    assert records["requests"].tolist() == [2, 1] and stats["flow_counts_late"] == 0


def test_period_slices_cut_where_a_new_period_starts() -> None:
    period = 60 * 1000 * MS
    base = (T0 // period + 1) * period
    ts = [base - MS, base + MS, base + 2 * MS, base - 2 * MS, base + period + MS, base + 3 * period]
    c = Conversation()
    for t in ts:
        c.send(t, b"")
    parts = period_slices(frames_batch(c.frames), period)
    # time going back (4th frame) cuts nothing; each later period starts a part
    assert [p.ts_ns.tolist() for p in parts] == [ts[:1], ts[1:4], ts[4:5], ts[5:]]
    assert period_slices(frames_batch(c.frames), 0)[0].ts_ns.tolist() == ts


def test_only_the_enabled_protocols_are_parsed() -> None:
    parser = _http_flow_parser(RequestConfig(protocols=("dns", "mysql")))
    parser.flush()
    assert len(parser.records()) == 0 and parser.stats["protocol_disabled"] > 0
    with pytest.raises(ConfigError):
        RequestConfig(protocols=("http", "smtp"))
    with pytest.raises(ConfigError):
        RequestConfig(count_hold_s=-1)


def test_memory_bytes_is_what_the_parser_allocates() -> None:
    for cfg in (RequestConfig(), RequestConfig(max_flows=1000, queue=3, out_rows=4096)):
        assert RequestParser(cfg).memory_bytes == cfg.memory_bytes


def test_annotate_flows_checks_its_input() -> None:
    with pytest.raises(ValueError, match="count_hold_s"):
        RequestParser().annotate_flows(np.zeros(1, FLOW_DTYPE))  # idle flows would drop counts unseen
    parser = RequestParser(RequestConfig(count_hold_s=1))
    with pytest.raises(ValueError):
        parser.annotate_flows(np.zeros(2, np.int64))
    ro = np.zeros(2, FLOW_DTYPE)
    ro.flags.writeable = False
    with pytest.raises(ValueError):
        parser.annotate_flows(ro)

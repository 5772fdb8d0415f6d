"""Every rule of docs/flow-semantics.md on hand-built packets, for the meter and for the reference.

Each test runs twice (``impl``): on :class:`cloudtap.meter.Meter` and on
:func:`cloudtap.meter.reference.reference_meter`. Where the kernel is known to deviate from the
document the meter run is marked ``xfail(strict=True)`` with the quirk's name (see
``reference.KERNEL_QUIRKS``): fixing the kernel turns it into a failure that asks to drop the mark.
TCP verdicts (retransmission, out-of-order, keep-alive, zero window) were checked against tshark 4.0.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from packets import (
    MS,
    T0,
    US,
    S,
    assert_same_edges,
    assert_same_records,
    icmp,
    packet,
    run_meter,
    stack,
    tcp,
    udp,
)

from cloudtap.meter import Meter, MeterConfig
from cloudtap.meter.reference import KERNEL_QUIRKS, reference_meter
from cloudtap.schema.address import from_text
from cloudtap.schema.flow import (
    CLOSE_CLIENT_RST,
    CLOSE_FIN,
    CLOSE_FORCED,
    CLOSE_HALF_OPEN,
    CLOSE_ONGOING,
    CLOSE_SERVER_REFUSED,
    CLOSE_SERVER_RST,
    CLOSE_SYN_UNANSWERED,
    CLOSE_TIMEOUT,
    FLOW_COUNTERS,
    SIDE_FIRST_PACKET,
    SIDE_HANDSHAKE,
    SIDE_PORT,
)
from cloudtap.schema.packet import (
    PROTO_TCP,
    STATUS_MALFORMED,
    STATUS_NOT_IP,
    STATUS_TRUNCATED,
    TUNNEL_VXLAN,
)

C, SV, CP, SP = "10.0.0.1", "10.0.0.2", 40000, 80
T = T0 + 5 * S  # inside the first minute
Run = Callable[..., tuple[np.ndarray, np.ndarray, dict[str, int]]]


@pytest.fixture(params=["meter", "reference"])
def impl(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def run(impl: str) -> Run:
    """``run(packets, config=None) -> (records, edge deltas, stats)`` on the implementation under test."""

    def _run(
        packets: np.ndarray, config: MeterConfig | None = None
    ) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
        config = config or MeterConfig()
        if impl == "meter":
            records, deltas, meter = run_meter(packets, config)
            return records, deltas, vars(meter.stats)
        stats: dict[str, int] = {}
        records, deltas = reference_meter(packets, config, stats=stats)
        return records, deltas, stats

    return _run


def kernel_bug(request: pytest.FixtureRequest, impl: str, quirk: str) -> None:
    """Mark the meter run of this test as a known deviation (strict: fixing it must drop the mark)."""
    if impl == "meter":
        request.applymarker(pytest.mark.xfail(strict=True, reason=f"{quirk}: {KERNEL_QUIRKS[quirk]}"))


def c2s(
    t: int, flags: str, seq: int, ack: int = 0, payload: int = 0, win: int = 1000, **kw: Any
) -> np.ndarray:
    return tcp(t, C, CP, SV, SP, flags, seq, ack, payload, win, **kw)


def s2c(
    t: int, flags: str, seq: int, ack: int = 0, payload: int = 0, win: int = 1000, **kw: Any
) -> np.ndarray:
    return tcp(t, SV, SP, C, CP, flags, seq, ack, payload, win, **kw)


def handshake(t: int = T, server_half: int = 1 * MS, client_half: int = 1 * MS) -> list[np.ndarray]:
    """SYN (ISN 99), SYN-ACK (ISN 499), ACK: data starts at 100 (client) and 500 (server)."""
    return [
        c2s(t, "S", 99),
        s2c(t + server_half, "SA", 499, 100),
        c2s(t + server_half + client_half, "A", 100, 500),
    ]


def only(records: np.ndarray) -> np.void:
    assert len(records) == 1, records
    return records[0]


def addr(text: str) -> tuple[int, int]:
    return from_text(text)


def client_of(rec: np.void) -> tuple[str | int, ...]:
    return (int(rec["client_hi"]), int(rec["client_lo"]), int(rec["client_port"]))


# -- client and server -------------------------------------------------------------------------------


def test_handshake_sets_client_and_exact_rtt_halves(run: Run) -> None:
    rows = handshake(T, server_half=1_234_567, client_half=2_345_678)
    t = T + 10 * MS
    rows += [c2s(t, "PA", 100, 500, 100), s2c(t + MS, "PA", 500, 200, 300)]
    rec = only(run(stack(*rows))[0])
    assert client_of(rec) == (*addr(C), CP)
    assert (int(rec["server_lo"]), int(rec["server_port"])) == (addr(SV)[1], SP)
    assert rec["side_rule"] == SIDE_HANDSHAKE
    assert rec["rtt_server_us"] == 1234.567
    assert rec["rtt_client_us"] == 2345.678
    assert (rec["syn_count"], rec["synack_count"]) == (1, 1)
    assert (rec["packets_c2s"], rec["packets_s2c"]) == (3, 2)
    assert (rec["bytes_c2s"], rec["bytes_s2c"]) == (40 + 40 + 140, 40 + 340)
    assert (rec["payload_bytes_c2s"], rec["payload_bytes_s2c"]) == (100, 300)
    assert (rec["tcp_flags_c2s"], rec["tcp_flags_s2c"]) == (0x02 | 0x10 | 0x08, 0x02 | 0x10 | 0x08)
    assert (rec["start_ns"], rec["first_ns"], rec["last_ns"]) == (T, T, t + MS)
    assert rec["close_type"] == CLOSE_FORCED
    assert (rec["retrans_c2s"], rec["ooo_c2s"], rec["zero_window_c2s"]) == (0, 0, 0)


def test_rtt_halves_with_retried_syn_and_synack(run: Run) -> None:
    """Server half from the first SYN-ACK back to the latest SYN; client half from the latest SYN-ACK."""
    rows = [
        c2s(T, "S", 99),
        c2s(T + S, "S", 99),  # retry
        s2c(T + S + 3 * MS, "SA", 499, 100),
        s2c(T + S + 13 * MS, "SA", 499, 100),  # retransmitted SYN-ACK
        c2s(T + S + 14 * MS, "A", 100, 500),
    ]
    rec = only(run(stack(*rows))[0])
    assert rec["rtt_server_us"] == 3000.0
    assert rec["rtt_client_us"] == 1000.0  # a retransmitted SYN-ACK restarts the client half (Argus)
    assert (rec["syn_count"], rec["synack_count"]) == (2, 2)
    assert (rec["retrans_c2s"], rec["retrans_s2c"]) == (1, 1)  # SYN and SYN-ACK repeats are retransmissions


def test_synack_first_makes_its_receiver_the_client(run: Run) -> None:
    rows = [s2c(T, "SA", 499, 100), c2s(T + 700 * US, "A", 100, 500), c2s(T + MS, "PA", 100, 500, 10)]
    records, deltas, _ = run(stack(*rows))
    rec = only(records)
    assert client_of(rec) == (*addr(C), CP)
    assert rec["side_rule"] == SIDE_HANDSHAKE
    assert (rec["rtt_server_us"], rec["rtt_client_us"]) == (-1.0, 700.0)
    assert deltas["rtt_count"].sum() == 0  # only a full handshake RTT goes to the edges


@pytest.mark.parametrize(
    ("sport", "dport", "sender_is_client", "rule"),
    [
        (40000, 53, True, SIDE_PORT),  # ephemeral -> well-known
        (53, 40000, False, SIDE_PORT),  # a reply seen first
        (5432, 50000, False, SIDE_PORT),  # registered vs ephemeral
        (50000, 5432, True, SIDE_PORT),
        (1024, 20000, True, SIDE_FIRST_PACKET),  # both registered
        (50000, 50001, True, SIDE_FIRST_PACKET),  # both ephemeral
        (80, 443, True, SIDE_FIRST_PACKET),  # both well-known
        (1023, 1024, False, SIDE_PORT),  # rank boundaries
        (32767, 32768, False, SIDE_PORT),
    ],
)
def test_port_rank_rule(run: Run, sport: int, dport: int, sender_is_client: bool, rule: int) -> None:
    rows = [udp(T, C, sport, SV, dport, 10), udp(T + MS, SV, dport, C, sport, 20)]
    rec = only(run(stack(*rows))[0])
    assert rec["side_rule"] == rule
    want = (*addr(C), sport) if sender_is_client else (*addr(SV), dport)
    assert client_of(rec) == want
    assert (rec["payload_bytes_c2s"], rec["payload_bytes_s2c"]) == (
        (10, 20) if sender_is_client else (20, 10)
    )


def test_tcp_without_handshake_uses_ports(run: Run) -> None:
    rows = [s2c(T, "PA", 500, 100, 50), c2s(T + MS, "A", 100, 550)]  # mid-stream, server speaks first
    rec = only(run(stack(*rows))[0])
    assert (client_of(rec), rec["side_rule"]) == ((*addr(C), CP), SIDE_PORT)
    assert rec["rtt_client_us"] == rec["rtt_server_us"] == -1.0
    assert (rec["syn_count"], rec["synack_count"]) == (0, 0)


def test_icmp_echo_request_and_reply(run: Run) -> None:
    rows = [icmp(T, C, SV, 8, ident=77), icmp(T + MS, SV, C, 0, ident=77), icmp(T + S, C, SV, 8, ident=77)]
    rec = only(run(stack(*rows))[0])
    assert client_of(rec) == (*addr(C), 77)
    assert (rec["server_port"], rec["side_rule"]) == (77, SIDE_PORT)
    assert (rec["packets_c2s"], rec["packets_s2c"]) == (2, 1)


@pytest.mark.parametrize(
    ("src", "dst", "request_type", "reply_type"), [(C, SV, 8, 0), ("fd00::1", "fd00::2", 128, 129)]
)
def test_icmp_echo_reply_first_makes_its_sender_the_server(
    run: Run, src: str, dst: str, request_type: int, reply_type: int
) -> None:
    rows = [icmp(T, dst, src, reply_type, ident=5), icmp(T + S, src, dst, request_type, ident=5)]
    rec = only(run(stack(*rows))[0])
    assert client_of(rec) == (*addr(src), 5)
    assert rec["side_rule"] == SIDE_PORT
    assert rec["ip_ver"] == (6 if ":" in src else 4)


def test_icmp_error_sender_is_client_with_type_code_as_server_port(run: Run) -> None:
    rec = only(run(icmp(T, SV, C, 3, code=3))[0])  # port unreachable
    assert client_of(rec) == (*addr(SV), 0)
    assert (rec["server_port"], rec["side_rule"]) == (0x0303, SIDE_FIRST_PACKET)


# -- close types --------------------------------------------------------------------------------------


def fin_both_ways(t: int) -> list[np.ndarray]:
    return [c2s(t, "FA", 100, 500), s2c(t + MS, "FA", 500, 101), c2s(t + 2 * MS, "A", 101, 501)]


def test_fin_both_ways_then_linger(run: Run) -> None:
    rows = [*handshake(), *fin_both_ways(T + 10 * MS), udp(T + 3 * S, "10.9.0.1", 40000, "10.9.0.2", 53)]
    records, _, _ = run(stack(*rows))
    tcp_rec = only(records[records["proto"] == PROTO_TCP])
    assert tcp_rec["close_type"] == CLOSE_FIN
    assert (tcp_rec["tcp_flags_c2s"] & 1, tcp_rec["tcp_flags_s2c"] & 1) == (1, 1)


def test_fin_one_way_then_idle_is_fin(run: Run) -> None:
    config = MeterConfig(tcp_idle_timeout_s=30)
    rows = [*handshake(), c2s(T + 10 * MS, "FA", 100, 500), s2c(T + 11 * MS, "A", 500, 101)]
    rows.append(udp(T + 40 * S, "10.9.0.1", 40000, "10.9.0.2", 53))  # moves the clock past the idle timeout
    records, _, _ = run(stack(*rows), config)
    assert only(records[records["proto"] == PROTO_TCP])["close_type"] == CLOSE_FIN


def test_fin_one_way_at_end_of_input_is_forced_end(
    run: Run, impl: str, request: pytest.FixtureRequest
) -> None:
    rows = [*handshake(), c2s(T + 10 * MS, "FA", 100, 500), s2c(T + 11 * MS, "A", 500, 101)]
    assert only(run(stack(*rows))[0])["close_type"] == CLOSE_FORCED


@pytest.mark.parametrize(
    ("rows", "close"),
    [
        ([*handshake(), c2s(T + 10 * MS, "RA", 100, 500)], CLOSE_CLIENT_RST),
        ([*handshake(), s2c(T + 10 * MS, "RA", 500, 100)], CLOSE_SERVER_RST),
        ([s2c(T, "PA", 500, 100, 10), s2c(T + MS, "R", 510)], CLOSE_SERVER_RST),  # mid-stream
        ([c2s(T, "S", 99), s2c(T + MS, "RA", 0, 100)], CLOSE_SERVER_REFUSED),
        ([c2s(T, "S", 99), s2c(T + MS, "SA", 499, 100), s2c(T + 2 * MS, "R", 500)], CLOSE_SERVER_RST),
        ([c2s(T, "S", 99), c2s(T + MS, "R", 100)], CLOSE_CLIENT_RST),
        # the first RST decides
        ([*handshake(), c2s(T + 10 * MS, "R", 100), s2c(T + 11 * MS, "R", 500)], CLOSE_CLIENT_RST),
    ],
    ids=[
        "client",
        "server",
        "server_midstream",
        "refused",
        "rst_after_synack",
        "client_in_syn_sent",
        "first",
    ],
)
def test_rst_close_types(run: Run, rows: list[np.ndarray], close: int) -> None:
    assert only(run(stack(*rows))[0])["close_type"] == close


def test_syn_unanswered_at_end_of_input(run: Run) -> None:
    records, deltas, _ = run(stack(c2s(T, "S", 99), c2s(T + S, "S", 99), c2s(T + 3 * S, "S", 99)))
    rec = only(records)
    assert (rec["close_type"], rec["syn_count"], rec["packets_s2c"]) == (CLOSE_SYN_UNANSWERED, 3, 0)
    assert (rec["retrans_c2s"], rec["side_rule"]) == (2, SIDE_HANDSHAKE)
    assert deltas["flows_failed"].sum() == 1


def test_syn_unanswered_after_idle_timeout(run: Run, impl: str, request: pytest.FixtureRequest) -> None:
    """A SYN-only flow lives 60 s, so it always sees a minute boundary (a periodic record) first."""
    rows = [c2s(T, "S", 99), c2s(T + S, "S", 99), udp(T + 59 * S, "10.9.0.1", 40000, "10.9.0.2", 53)]
    rows.append(udp(T + 70 * S, "10.9.0.1", 40000, "10.9.0.2", 53))
    records, deltas, _ = run(stack(*rows))
    syn = np.sort(records[records["proto"] == PROTO_TCP], order="record_seq")
    assert syn["close_type"].tolist() == [CLOSE_ONGOING, CLOSE_SYN_UNANSWERED]
    assert deltas["flows_failed"].sum() == 1


def test_half_open(run: Run) -> None:
    rows = [c2s(T, "S", 99), s2c(T + MS, "SA", 499, 100), s2c(T + S + MS, "SA", 499, 100)]
    rows.append(udp(T + 56 * S, "10.9.0.1", 40000, "10.9.0.2", 53))  # the minute: a periodic record
    rows.append(udp(T + 62 * S, "10.9.0.1", 40000, "10.9.0.2", 53))  # idle now
    records, deltas, _ = run(stack(*rows))
    rec = np.sort(records[records["proto"] == PROTO_TCP], order="record_seq")
    assert rec["close_type"].tolist() == [CLOSE_ONGOING, CLOSE_HALF_OPEN]
    assert rec["rtt_server_us"].tolist() == [1000.0, 1000.0]
    assert rec["rtt_client_us"].tolist() == [-1.0, -1.0]
    assert deltas["flows_failed"].sum() == 1
    assert only(run(stack(*rows[:3]))[0])["close_type"] == CLOSE_HALF_OPEN  # and at end of input


def test_timeouts_udp_and_established_tcp(run: Run) -> None:
    config = MeterConfig(idle_timeout_s=10, tcp_idle_timeout_s=30)
    rows = [udp(T, C, 40000, SV, 53, 10), *handshake(T), c2s(T + 5 * MS, "PA", 100, 500, 10)]
    rows += [icmp(T + i * S, "10.9.0.1", "10.9.0.2", 8, 1) for i in (20, 29, 38, 45)]  # the clock
    records, deltas, _ = run(stack(*rows), config)
    by_proto = {int(r["proto"]): int(r["close_type"]) for r in records}
    assert by_proto == {17: CLOSE_TIMEOUT, 6: CLOSE_TIMEOUT, 1: CLOSE_FORCED}
    assert deltas["flows_failed"].sum() == 0
    assert deltas["flows_closed"].sum() == 3


def test_tcp_before_establishment_uses_the_short_idle_timeout(run: Run) -> None:
    config = MeterConfig(idle_timeout_s=10, tcp_idle_timeout_s=300)
    rows = [c2s(T, "S", 99), s2c(T + MS, "SA", 499, 100), udp(T + 12 * S, "10.9.0.1", 4000, "10.9.0.2", 53)]
    records, _, _ = run(stack(*rows), config)
    tcp_rec = only(records[records["proto"] == PROTO_TCP])
    assert tcp_rec["close_type"] == CLOSE_HALF_OPEN
    assert tcp_rec["last_ns"] == T + MS


def test_idle_timeout_splits_a_flow(run: Run) -> None:
    rows = [
        udp(T, C, 40000, SV, 53, 1),
        udp(T + S, SV, 53, C, 40000, 2),
        udp(T + 100 * S, C, 40000, SV, 53, 3),
    ]
    records, deltas, _ = run(stack(*rows))
    assert len(records) == 2
    first, second = sorted(records, key=lambda r: int(r["start_ns"]))
    assert first["flow_id"] != second["flow_id"]
    assert (first["close_type"], first["packets_c2s"], first["packets_s2c"]) == (CLOSE_TIMEOUT, 1, 1)
    assert (first["first_ns"], first["last_ns"]) == (T, T + S)
    assert (second["close_type"], second["start_ns"], second["payload_bytes_c2s"]) == (
        CLOSE_FORCED,
        T + 100 * S,
        3,
    )
    assert second["record_seq"] == 0
    assert deltas["flows_opened"].sum() == deltas["flows_closed"].sum() == 2


@pytest.mark.parametrize("closing", ["fin", "rst"])
def test_port_reuse_after_close_starts_a_new_flow(run: Run, closing: str) -> None:
    if closing == "fin":
        rows = [*handshake(T), *fin_both_ways(T + 10 * MS)]
    else:
        rows = [c2s(T, "S", 99), s2c(T + MS, "RA", 0, 100)]
    rows += handshake(T + 500 * MS)  # well within the 2 s linger
    records, deltas, _ = run(stack(*rows))
    assert len(records) == 2
    old, new = sorted(records, key=lambda r: int(r["start_ns"]))
    assert old["close_type"] == (CLOSE_FIN if closing == "fin" else CLOSE_SERVER_REFUSED)
    assert (new["start_ns"], new["side_rule"], new["syn_count"]) == (T + 500 * MS, SIDE_HANDSHAKE, 1)
    assert new["rtt_server_us"] == 1000.0
    assert old["flow_id"] != new["flow_id"]
    assert deltas["flows_opened"].sum() == 2


def test_syn_on_an_open_flow_is_the_same_flow(run: Run) -> None:
    rows = [*handshake(T), c2s(T + 10 * MS, "FA", 100, 500), c2s(T + 20 * MS, "S", 99)]  # FIN one way only
    rec = only(run(stack(*rows))[0])
    assert rec["syn_count"] == 2


# -- TCP health ---------------------------------------------------------------------------------------


def data_flow(*rows: np.ndarray) -> np.ndarray:
    """Handshake with a 2 ms RTT, then ``rows``."""
    return stack(*handshake(T), *rows)


def tcp_counts(run: Run, packets: np.ndarray) -> dict[str, int]:
    rec = only(run(packets)[0])
    return {n: int(rec[n]) for n in ("retrans_c2s", "retrans_s2c", "ooo_c2s", "ooo_s2c", "zero_window_c2s",
                                     "zero_window_s2c")}  # fmt: skip


D = T + 10 * MS  # data starts here


def test_rto_retransmission_spurious_and_late_reordering_are_retransmissions(run: Run) -> None:
    got = tcp_counts(
        run,
        data_flow(
            c2s(D, "PA", 100, 500, 100),
            c2s(D + 300 * MS, "PA", 100, 500, 100),  # retransmission (not acked)
            s2c(D + 301 * MS, "A", 500, 200),
            c2s(D + 590 * MS, "PA", 100, 500, 100),  # spurious: already acked
            c2s(D + 690 * MS, "A", 300, 500, 100),  # a hole before it
            c2s(D + 700 * MS, "A", 200, 500, 100),  # fills it 10 ms later (> handshake RTT): retransmission
        ),
    )
    assert got == dict(
        retrans_c2s=3, retrans_s2c=0, ooo_c2s=0, ooo_s2c=0, zero_window_c2s=0, zero_window_s2c=0
    )


def test_out_of_order_within_the_handshake_rtt(run: Run) -> None:
    got = tcp_counts(run, data_flow(c2s(D, "A", 200, 500, 100), c2s(D + 1900 * US, "A", 100, 500, 100)))
    assert (got["ooo_c2s"], got["retrans_c2s"]) == (1, 0)
    got = tcp_counts(run, data_flow(c2s(D, "A", 200, 500, 100), c2s(D + 2100 * US, "A", 100, 500, 100)))
    assert (got["ooo_c2s"], got["retrans_c2s"]) == (0, 1)  # just past the 2 ms RTT


def test_out_of_order_threshold_is_3ms_without_handshake(run: Run) -> None:
    mid = [c2s(T, "A", 100, 500, 10), s2c(T + MS, "A", 500, 110)]
    got = tcp_counts(run, stack(*mid, c2s(D, "A", 210, 500, 100), c2s(D + 2900 * US, "A", 110, 500, 100)))
    assert (got["ooo_c2s"], got["retrans_c2s"]) == (1, 0)
    got = tcp_counts(run, stack(*mid, c2s(D, "A", 210, 500, 100), c2s(D + 3100 * US, "A", 110, 500, 100)))
    assert (got["ooo_c2s"], got["retrans_c2s"]) == (0, 1)


def test_keep_alives_are_not_retransmissions(run: Run) -> None:
    got = tcp_counts(
        run,
        data_flow(
            c2s(D, "PA", 100, 500, 100),
            s2c(D + MS, "A", 500, 200),
            c2s(D + 5 * S, "A", 199, 500, 0),  # keep-alive, no data
            s2c(D + 5 * S + MS, "A", 500, 200),
            c2s(D + 10 * S, "A", 199, 500, 1),  # keep-alive with one garbage byte
            s2c(D + 10 * S + MS, "A", 500, 200),
        ),
    )
    assert (got["retrans_c2s"], got["ooo_c2s"], got["retrans_s2c"]) == (0, 0, 0)


def test_fast_retransmission_beats_out_of_order(run: Run) -> None:
    got = tcp_counts(
        run,
        data_flow(
            # 100..200 lost before the capture point
            c2s(D, "A", 200, 500, 100),
            c2s(D + 100 * US, "A", 300, 500, 100),
            s2c(D + 200 * US, "A", 500, 100),  # duplicate ACKs (the SYN-ACK acked 100 already)
            s2c(D + 300 * US, "A", 500, 100),
            s2c(D + 400 * US, "A", 500, 100),
            c2s(D + 600 * US, "A", 100, 500, 100),  # within 2 ms of the highest: fast, not out-of-order
        ),
    )
    assert (got["retrans_c2s"], got["ooo_c2s"], got["retrans_s2c"]) == (1, 0, 0)


def test_pure_acks_are_never_retransmissions(run: Run) -> None:
    acks = [s2c(D + i * MS, "A", 500, 100) for i in range(5)]
    got = tcp_counts(run, data_flow(*acks, c2s(D + 10 * MS, "A", 100, 500)))
    assert (got["retrans_s2c"], got["ooo_s2c"], got["retrans_c2s"]) == (0, 0, 0)


def test_fin_retransmission(run: Run) -> None:
    got = tcp_counts(run, data_flow(c2s(D, "FA", 100, 500), c2s(D + 300 * MS, "FA", 100, 500)))
    assert (got["retrans_c2s"], got["ooo_c2s"]) == (1, 0)


def test_quick_fin_retransmission_is_not_out_of_order(run: Run) -> None:
    got = tcp_counts(run, data_flow(c2s(D, "FA", 100, 500), c2s(D + 500 * US, "FA", 100, 500)))
    assert (got["retrans_c2s"], got["ooo_c2s"]) == (1, 0)  # tshark 4.0: retransmission


def test_quick_syn_retransmission_is_not_out_of_order(run: Run) -> None:
    got = tcp_counts(run, stack(c2s(T, "S", 99), c2s(T + 500 * US, "S", 99)))
    assert (got["retrans_c2s"], got["ooo_c2s"]) == (1, 0)  # tshark 4.0: retransmission


def test_spurious_retransmission_within_rtt(run: Run) -> None:
    got = tcp_counts(
        run,
        data_flow(
            c2s(D, "A", 100, 500, 100),
            c2s(D + 100 * US, "A", 200, 500, 100),
            s2c(D + 200 * US, "A", 500, 300),
            c2s(D + 500 * US, "A", 100, 500, 100),  # already acked: spurious (tshark 4.0)
        ),
    )
    assert (got["retrans_c2s"], got["ooo_c2s"]) == (1, 0)


def test_zero_window_counts_and_probes(run: Run) -> None:
    got = tcp_counts(
        run,
        data_flow(
            c2s(D, "PA", 100, 500, 100),
            s2c(D + MS, "A", 500, 200, win=0),  # zero window
            c2s(D + 300 * MS, "A", 200, 500, 1),  # zero-window probe
            s2c(D + 301 * MS, "A", 500, 200, win=0),  # its ACK still advertises zero: counted
            c2s(D + 700 * MS, "A", 200, 500, 1, win=0),  # a probe advertising zero itself: excluded
            s2c(D + 701 * MS, "A", 500, 200, win=0),
            s2c(D + 900 * MS, "A", 500, 200),  # window update
            c2s(D + 901 * MS, "PA", 200, 500, 100),  # the probe byte did not advance the sequence
            c2s(D + 902 * MS, "R", 300, 0, win=0),  # RST with window 0: not a zero window
        ),
    )
    assert got == dict(
        retrans_c2s=0, retrans_s2c=0, ooo_c2s=0, ooo_s2c=0, zero_window_c2s=0, zero_window_s2c=3
    )


def test_sequence_wraparound(run: Run) -> None:
    isn = (1 << 32) - 50
    rows = [
        c2s(T, "S", isn - 1),
        s2c(T + MS, "SA", 499, isn),
        c2s(T + 2 * MS, "A", isn, 500),
        c2s(D, "A", isn, 500, 100),  # wraps past 2**32
        c2s(D + MS, "A", isn + 100, 500, 100),
        c2s(D + 300 * MS, "A", isn + 100, 500, 100),  # retransmission across the wrap
    ]
    got = tcp_counts(run, stack(*rows))
    assert (got["retrans_c2s"], got["ooo_c2s"]) == (1, 0)


# -- records: bytes, keys, periods -------------------------------------------------------------------


def test_lengths_macs_tunnel_and_unmetered_rows(run: Run) -> None:
    vni: dict[str, Any] = {"tunnel_id": 42, "tunnel_type": TUNNEL_VXLAN, "tunnel_dst": "192.168.1.2"}
    tunnel = {**vni, "tunnel_src": "192.168.1.1"}
    rows = [
        udp(T, C, 40000, SV, 53, 100, wire_len=200, src_mac=0xA, **tunnel),
        # outer addresses are not part of the key: the record keeps the first packet's
        udp(T + MS, SV, 53, C, 40000, 300, wire_len=400, src_mac=0xB, tunnel_src="192.168.9.9", **vni),
        udp(T + 2 * MS, C, 40000, SV, 53, 100),  # same addresses, no tunnel: another flow
        udp(T + 3 * MS, C, 40000, SV, 53, 100, vlan=7),  # and with a VLAN: another
        # a snapped frame: IP lengths from the header still count
        udp(T + 4 * MS, C, 40000, SV, 53, 1000, status=STATUS_TRUNCATED, **tunnel),
        udp(T + 5 * MS, C, 40000, SV, 53, 9, status=STATUS_MALFORMED),
        packet(T + 6 * MS, C, 0, SV, 0, 0, status=STATUS_NOT_IP, flags=0),
    ]
    rows[-1]["ip_ver"] = 0
    records, _, stats = run(stack(*rows))
    assert len(records) == 3
    assert (stats["packets"], stats["metered"], stats["not_metered"]) == (7, 5, 2)
    rec = only(records[records["tunnel_id"] == 42])
    assert (rec["packets_c2s"], rec["packets_s2c"]) == (2, 1)
    assert (rec["bytes_c2s"], rec["bytes_s2c"]) == (128 + 1028, 328)
    assert (rec["l2_bytes_c2s"], rec["l2_bytes_s2c"]) == (200 + 1042, 400)
    assert (rec["payload_bytes_c2s"], rec["payload_bytes_s2c"]) == (1100, 300)
    assert (rec["client_mac"], rec["server_mac"]) == (0xA, 0xB)
    assert (rec["tunnel_type"], rec["tunnel_src_lo"]) == (
        TUNNEL_VXLAN,
        addr("192.168.1.1")[1],
    )  # first packet's
    assert rec["tunnel_dst_lo"] == addr("192.168.1.2")[1]
    assert sorted(records["vlan"].tolist()) == [0, 0, 7]


@pytest.mark.parametrize("by_interface", [False, True])
def test_capture_interface(run: Run, by_interface: bool) -> None:
    rows = [udp(T, C, 40000, SV, 53, interface=1), udp(T + MS, SV, 53, C, 40000, interface=2)]
    records, deltas, _ = run(stack(*rows), MeterConfig(key_by_interface=by_interface))
    if by_interface:  # one flow per observation point
        assert sorted(records["interface"].tolist()) == [1, 2]
        assert sorted(deltas["interface"].tolist()) == [1, 2]
    else:  # where the flow was first seen
        rec = only(records)
        assert (rec["interface"], rec["packets_c2s"], rec["packets_s2c"]) == (1, 1, 1)
        assert set(deltas["interface"].tolist()) == {1}


def test_truncated_tcp_without_l4_is_metered_with_ports_zero(run: Run) -> None:
    row = packet(T, C, 0, SV, 0, PROTO_TCP, payload=500, l4_header=20, status=STATUS_TRUNCATED, flags=0)
    rec = only(run(row)[0])
    assert (rec["client_port"], rec["server_port"], rec["bytes_c2s"]) == (0, 0, 540)
    assert rec["retrans_c2s"] == rec["tcp_flags_c2s"] == 0


def test_ipv6_flow(run: Run) -> None:
    rows = [
        tcp(T, "fd00::1", 40000, "fd00::2", 443, "S", 9),
        tcp(T + MS, "fd00::2", 443, "fd00::1", 40000, "SA", 1, 10),
    ]
    rec = only(run(stack(*rows))[0])
    assert (rec["ip_ver"], rec["client_hi"], rec["client_lo"]) == (6, *addr("fd00::1"))
    assert rec["bytes_c2s"] == 60


def test_periodic_records_align_to_intervals_and_sum_to_the_flow(run: Run) -> None:
    rows = [*handshake(T)]
    times = [T + 7 * S * i for i in range(1, 29)]  # to T0 + 201 s
    rows += [c2s(t, "PA", 100 + 10 * i, 500, 10) for i, t in enumerate(times)]
    packets = stack(*rows)
    records, _, _ = run(packets)
    records = records[np.argsort(records["record_seq"])]
    period = 60 * S
    assert records["record_seq"].tolist() == [0, 1, 2, 3]
    assert records["close_type"].tolist() == [CLOSE_ONGOING] * 3 + [CLOSE_FORCED]
    assert len(set(records["flow_id"].tolist())) == 1
    assert (records["start_ns"] == T).all()
    for k, rec in enumerate(records):
        lo, hi = T0 + k * period, T0 + (k + 1) * period
        assert lo <= rec["first_ns"] <= rec["last_ns"] < hi
    assert records["packets_c2s"].sum() == 2 + len(times)
    assert records["packets_s2c"].sum() == 1
    assert records["payload_bytes_c2s"].sum() == 10 * len(times)
    assert records["syn_count"].tolist() == [1, 0, 0, 0]
    assert (records["rtt_server_us"] == 1000.0).all()  # the handshake RTT is on every record
    assert (records["rtt_client_us"] == 1000.0).all()


def test_final_record_after_a_quiet_spell_has_zero_counters(run: Run) -> None:
    rows = [udp(T0 + 50 * S, C, 40000, SV, 53, 1), udp(T0 + 59 * S, C, 40000, SV, 53, 1)]
    rows += [
        udp(T0 + 61 * S, "10.9.0.1", 40000, "10.9.0.2", 53),
        udp(T0 + 130 * S, "10.9.0.1", 40000, "10.9.0.2", 53),
    ]
    records, _, _ = run(stack(*rows))
    mine = records[records["client_lo"] == addr(C)[1]]
    mine = mine[np.argsort(mine["record_seq"])]
    assert mine["close_type"].tolist() == [CLOSE_ONGOING, CLOSE_TIMEOUT]
    assert mine["packets_c2s"].tolist() == [2, 0]
    last = mine[1]
    assert (last["first_ns"], last["last_ns"], last["start_ns"]) == (T0 + 59 * S, T0 + 59 * S, T0 + 50 * S)
    assert all(int(last[name]) == 0 for name in FLOW_COUNTERS)


def test_flow_ids_start_at_the_configured_base(run: Run) -> None:
    rows = [udp(T + i, C, 40000 + i, SV, 53) for i in range(3)]
    records, _, _ = run(stack(*rows), MeterConfig(flow_id_base=1 << 40))
    assert sorted(records["flow_id"].tolist()) == [(1 << 40) + i for i in range(3)]


# -- capacity -----------------------------------------------------------------------------------------


def burst_of_flows(n: int, rounds: int, t: int = T) -> np.ndarray:
    """``n`` UDP flows, ``rounds`` packets each, round-robin 1 ms apart."""
    rows = [udp(t + (r * n + i) * MS, C, 20000 + i, SV, 53, 10) for r in range(rounds) for i in range(n)]
    return stack(*rows)


def test_table_full_is_counted_never_silent(run: Run) -> None:
    packets = stack(
        burst_of_flows(100, 3), udp(T + 100 * S, C, 9999, SV, 53)
    )  # admitted: the first 16 expired
    records, _, stats = run(packets, MeterConfig(max_flows=16))
    assert stats["flows_created"] == 17
    assert len(records) == 17
    assert stats["table_full_packets"] == 84 * 3
    assert stats["table_full_bytes"] == 84 * 3 * (38 + 14)
    assert stats["metered"] == 16 * 3 + 1
    assert (
        stats["metered"] + stats["table_full_packets"] + stats["not_metered"]
        == stats["packets"]
        == len(packets)
    )
    assert records["packets_c2s"].sum() == stats["metered"]


def test_table_full_counts_packets_and_bytes(run: Run) -> None:
    _, _, stats = run(burst_of_flows(100, 3), MeterConfig(max_flows=16))
    assert stats["table_full_packets"] == 84 * 3
    assert stats["table_full_bytes"] > 0



def test_small_output_buffer_still_yields_every_record() -> None:
    """500 flows, each with a periodic record at the minute and a final one, through a 64-row buffer."""
    config = MeterConfig(output_batch=64)
    packets = stack(burst_of_flows(500, 1, T0 + 50 * S), burst_of_flows(500, 1, T0 + 61 * S))
    batches: list[int] = []
    records: list[np.ndarray] = []
    edges: list[np.ndarray] = []

    def on_records(batch: np.ndarray) -> None:
        batches.append(len(batch))
        records.append(batch)

    meter = Meter(config, on_records=on_records, on_edges=edges.append)
    meter.add(packets)
    meter.flush()
    got = np.concatenate(records)
    assert len(got) == 1000 and max(batches) <= 64 and len(batches) >= 16
    assert max(len(e) for e in edges) <= 64
    assert sorted(got["record_seq"].tolist()) == [0] * 500 + [1] * 500
    assert meter.stats.records == 1000 and meter.active_flows == 0
    want, want_edges = reference_meter(packets, config)
    assert_same_records(got, want)
    assert_same_edges(np.concatenate(edges), want_edges)


def test_batches_do_not_change_the_result() -> None:
    rows = [*handshake(T), *fin_both_ways(T + 10 * MS), *[udp(T + i * S, C, 5000, SV, 53) for i in range(90)]]
    packets = stack(*rows)
    whole, whole_edges, _ = run_meter(packets)
    for sizes in ([1] * len(packets), [0, 2, 5, 40], [len(packets) - 1]):
        got, got_edges, _ = run_meter(packets, batches=sizes)
        # same rows in the same order (field by field: numba leaves struct padding undefined)
        assert len(got) == len(whole) and (got == whole).all()
        assert len(got_edges) == len(whole_edges) and (got_edges == whole_edges).all()


def test_meter_rejects_other_dtypes() -> None:
    with pytest.raises(TypeError, match="PACKET_DTYPE"):
        Meter(MeterConfig()).add(np.zeros(3, np.int64))


def test_meter_stats_and_memory() -> None:
    meter = Meter(MeterConfig(max_flows=1024))
    meter.add(burst_of_flows(10, 2))
    assert meter.active_flows == 10
    stats = meter.stats
    assert (stats.packets, stats.metered, stats.flows_created, stats.peak_active_flows) == (20, 20, 10, 10)
    assert meter.memory_bytes > 0 and meter.bytes_per_flow_slot > 0
    meter.flush()
    assert meter.active_flows == 0 and meter.stats.records == 10

"""The seed case's slow SQL: while db-01 pushes its backup, the shop's statements on that host get slow,
in the ground truth and as the request parser measures it from the capture; nowhere else."""

from __future__ import annotations

import numpy as np
import pytest

from cloudtap.l7 import parse_file
from cloudtap.l7.records import requests_to_arrow
from cloudtap.synth import SynthResult, builtin_scenario, write_pcap
from cloudtap.synth.incidents import occurrences
from cloudtap.synth.scenario import BackupIncident, with_overrides


@pytest.fixture(scope="module")
def seed(tmp_path_factory: pytest.TempPathFactory) -> SynthResult:
    scn = with_overrides(builtin_scenario("seed-case"), duration="70m")  # the 00:00 and 01:00 pushes
    return write_pcap(scn, tmp_path_factory.mktemp("seed") / "seed.pcap")


def _backup_windows() -> tuple[BackupIncident, list[tuple[int, int]]]:
    scn = builtin_scenario("seed-case")
    inc = next(i for i in scn.incidents if isinstance(i, BackupIncident))
    starts = [scn.start_ns + int(off * 1e9) for off in occurrences(inc, with_overrides(scn, duration="70m"))]
    return inc, [(t, t + int(inc.duration * 1e9)) for t in starts]


def _sql_to(table: object, server_ip: str) -> tuple[np.ndarray, np.ndarray]:
    """Request times and latencies (ms) of the answered PostgreSQL requests to ``server_ip``."""
    t = table  # an Arrow table with req_ns, latency_us, l7_proto, server_ip
    proto = np.asarray(t["l7_proto"].to_pylist())  # type: ignore[index]
    server = np.asarray(t["server_ip"].to_pylist())  # type: ignore[index]
    lat = t["latency_us"].to_numpy()  # type: ignore[index]
    sel = (proto == "pgsql") & (server == server_ip) & (lat >= 0)
    return t["req_ns"].to_numpy()[sel], lat[sel] / 1000.0  # type: ignore[index]


def _minutes(req: np.ndarray, lat: np.ndarray, start_ns: int) -> dict[int, float]:
    minute = (req - start_ns) // 60_000_000_000
    return {int(m): float(np.percentile(lat[minute == m], 99)) for m in np.unique(minute)}


def test_truth_and_parser_see_sql_p99_rise_in_the_backup_windows_only(seed: SynthResult) -> None:
    inc, windows = _backup_windows()
    effect = inc.contention[0]
    truth = seed.requests
    assert truth is not None
    db01 = truth.filter(truth["server_vm"].to_numpy(zero_copy_only=False) == "db-01")
    db_ip = db01["server_ip"][0].as_py()
    parsed = requests_to_arrow(parse_file(seed.path).requests)
    start_ns = windows[0][0]
    for table in (truth, parsed):
        req, lat = _sql_to(table, db_ip)
        inside = np.zeros(req.size, bool)
        for t0, t1 in windows:
            inside |= (req >= t0) & (req < t1)
        # inside: the contention's server time; outside: the service's own (up to 5 ms), loss aside
        assert np.percentile(lat[inside], 50) >= effect.server_ms[0]
        assert np.percentile(lat[inside], 99) >= 0.9 * effect.server_ms[1]
        assert np.percentile(lat[~inside], 90) <= 5.0 + 1.0
        p99 = _minutes(req, lat, start_ns)
        in_window = {m for m in p99 if any(t0 <= start_ns + m * 60_000_000_000 < t1 for t0, t1 in windows)}
        assert in_window == {0, 1, 2, 60, 61, 62}
        assert all(p99[m] > effect.server_ms[0] for m in in_window)
        quiet = [p99[m] for m in p99 if m not in in_window]
        assert np.median(quiet) < 6.0 and np.mean(np.asarray(quiet) < effect.server_ms[0]) > 0.9


def test_truth_marks_the_slowed_requests_and_nothing_on_other_databases(seed: SynthResult) -> None:
    truth = seed.requests
    assert truth is not None
    slow = np.asarray(truth["slow"].to_pylist())
    server = np.asarray(truth["server_vm"].to_pylist())
    service = np.asarray(truth["service"].to_pylist())
    assert slow.sum() > 100
    assert set(server[slow]) == {"db-01"} and set(service[slow]) == {"postgres"}
    _, windows = _backup_windows()
    req = truth["req_ns"].to_numpy()[slow]
    assert all(any(t0 - 10**9 <= r < t1 for t0, t1 in windows) for r in req)

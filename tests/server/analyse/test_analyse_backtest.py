"""Backtest, periodicity, signature text and the saved-signature table."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from analysedata import DictNames

from cloudtap.server.analyse import (
    AnalysisError,
    Signature,
    SignatureStore,
    backtest,
    find_period,
    parse_condition,
)


@pytest.mark.parametrize("when", ["bytes>5M", "z(bytes)>6", "oneway>10"])
def test_backtest_finds_the_hourly_backup(astore: Any, names: DictNames, when: str) -> None:
    sig = Signature(filter={"vm": "db-01"}, condition=parse_condition(when))
    r = backtest(astore, sig, names=names)
    assert r.stored_table == "edge_1m" and r.buckets == 180
    assert r.scanned == {"from": "2026-11-20T00:00:00Z", "to": "2026-11-20T03:00:00Z"}
    assert r.count == 3 and [o.start for o in r.occurrences] == [f"2026-11-20T0{h}:00:00Z" for h in range(3)]
    assert r.period is not None and r.period.period_s == pytest.approx(3600, abs=60)
    assert r.period.text == "every 60 min ± 1 min" and r.period.next_expected == "2026-11-20T03:00:00Z"


def test_backtest_hourly_step_and_range(astore: Any, names: DictNames) -> None:
    sig = Signature(filter={"port": 873}, condition=parse_condition("bytes>10M"), step="1h")
    r = backtest(astore, sig, time_from="2026-11-20T01:00:00Z", names=names)
    assert r.stored_table == "edge_1h" and r.count == 1 and r.period is None and r.buckets == 2


def test_backtest_matches_nothing_when_too_high(astore: Any) -> None:
    r = backtest(astore, Signature(condition=parse_condition("bytes>1T")))
    assert r.count == 0 and r.occurrences == [] and r.matching_buckets == 0


def test_find_period_tolerates_jitter_and_a_missed_cycle() -> None:
    starts = np.array([0, 3600, 7260, 14400, 18000, 21540]) + 1_763_596_800
    p = find_period(starts, 60)
    assert p is not None and abs(p.period_s - 3600) <= 60 and p.cycles == 5 and p.regularity == 1.0
    assert find_period(starts[:1], 60) is None


def test_parse_condition() -> None:
    c = parse_condition("bytes >= 50MiB")
    assert (c.metric, c.op, c.test, c.threshold) == ("bytes", "ge", "value", 50 * 2**20)
    z = parse_condition("z(packets)>4.5")
    assert (z.metric, z.test, z.threshold) == ("packets", "zscore", 4.5) and z.describe() == "z(packets) > 4.5"
    for bad in ("bytes", "colour>3", "bytes>>3"):
        with pytest.raises(AnalysisError):
            parse_condition(bad)


def test_signature_store_roundtrip(astore: Any) -> None:
    store = SignatureStore(astore)
    sig = Signature(name="db-backup", filter={"vm": "db-01", "port": 873}, condition=parse_condition("bytes>5M"))
    store.save(sig)
    store.save(sig.model_copy(update={"description": "v2"}))
    assert [s.name for s in store.list()].count("db-backup") == 1
    assert store.get("db-backup").description == "v2"
    store.delete("db-backup")
    assert "db-backup" not in [s.name for s in store.list()]
    with pytest.raises(AnalysisError):
        store.get("db-backup")
    with pytest.raises(AnalysisError):
        store.save(sig.model_copy(update={"name": None}))

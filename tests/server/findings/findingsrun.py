"""Running the findings engine over a test dataset (shared by the findings tests and their fixtures)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from findingsdata import Dataset, names_of

from cloudtap.server.findings.config import FindingsSection
from cloudtap.server.findings.engine import FindingsEngine
from cloudtap.server.findings.rules import IsolationRule

#: Learning shortened to fit the 30-minute planted cloud (everything else is the default).
TEST_CONFIG = FindingsSection(learn_minutes=10)
RULE = {"name": "no-analytics-shop", "description": "analytics must not reach shop", "a": {"project": "analytics"},
        "b": {"project": "shop"}}  # fmt: skip


@dataclass
class Ran:
    """A store holding a dataset, and the engine that ran over all of it."""

    data: Dataset
    store: Any
    engine: FindingsEngine
    summary: dict[str, Any]


def run_engine(dsn: str, data: Dataset, database: str, minutes: int, notify: Any = None) -> Ran:
    from cloudtap.server.store.clickhouse import ClickHouseStore

    store = ClickHouseStore(dsn, database=database)
    store.migrate()
    store.insert(data.tables, data.key)
    engine = FindingsEngine(store, TEST_CONFIG, names=lambda: names_of(data), notify=notify)
    engine.rules.save(IsolationRule.model_validate(RULE), "tester")
    summary = engine.run_range(data.start_s, data.start_s + minutes * 60)
    return Ran(data, store, engine, summary)

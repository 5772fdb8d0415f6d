"""Fixtures for the oracle tests: the shared captures, metered once per session."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from oracle_flows import PCAPS, Totals, aggregate_records


@pytest.fixture(scope="session")
def pcaps_root():
    """The shared capture corpus; skips when it is not beside the repository."""
    if not (PCAPS / "MANIFEST.csv").is_file():
        pytest.skip(f"shared captures not found at {PCAPS}")
    return PCAPS.resolve()


@pytest.fixture(scope="session")
def metered(pcaps_root) -> Callable[[str], tuple[Any, dict]]:
    """``metered(manifest_path)`` -> (MeterResult, per-key Totals), computed once per capture."""
    from cloudtap.meter import MeterConfig, meter_file

    cache: dict[str, tuple[Any, dict[tuple, Totals]]] = {}
    config = MeterConfig()

    def get(capture: str) -> tuple[Any, dict[tuple, Totals]]:
        if capture not in cache:
            result = meter_file(pcaps_root / capture, config=config)
            cache[capture] = (result, aggregate_records(result.to_arrow().to_pylist()))
        return cache[capture]

    return get

"""Shared fixtures: where the shared captures live."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_PCAPS = REPO.parent / "shared" / "pcaps"


@pytest.fixture(scope="session")
def shared_pcaps() -> Path:
    """The shared corpus of real captures; skips the test when it is absent."""
    if not (SHARED_PCAPS / "MANIFEST.csv").is_file():
        pytest.skip("../shared/pcaps is not present")
    return SHARED_PCAPS

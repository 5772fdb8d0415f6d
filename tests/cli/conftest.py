"""CLI tests never read or write the real credentials file, nor take a server or token from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _private_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``CLOUDTAP_CREDENTIALS`` in this test's directory; no ``CLOUDTAP_TOKEN/SERVER/CA``."""
    path = tmp_path / "home" / "cloudtap" / "credentials.yaml"
    monkeypatch.setenv("CLOUDTAP_CREDENTIALS", str(path))
    for name in ("CLOUDTAP_TOKEN", "CLOUDTAP_SERVER", "CLOUDTAP_CA"):
        monkeypatch.delenv(name, raising=False)
    return path

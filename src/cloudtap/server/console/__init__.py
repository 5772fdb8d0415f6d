"""The web console's built files: ``dist/``, made from ``web/`` by ``make console`` (never committed).

The server serves them at ``/`` (see :mod:`cloudtap.server.api.routes.console`), with Swagger UI's
assets under ``dist/swagger`` so ``/docs`` works on an offline network.
"""

from __future__ import annotations

from pathlib import Path

DIST = Path(__file__).resolve().parent / "dist"


def built(dist: Path = DIST) -> bool:
    """Whether the console has been built into ``dist``."""
    return (dist / "index.html").is_file()

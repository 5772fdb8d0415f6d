"""Rich renderables built from results; never reads files or queries anything."""

from __future__ import annotations

from datetime import UTC, datetime

from rich.console import Console


def make_console(**kwargs: object) -> Console:
    """A Console that is at least 120 columns wide when the output is not a terminal."""
    console = Console(**kwargs)  # type: ignore[arg-type]
    if not console.is_terminal and "width" not in kwargs:
        console = Console(width=140, **kwargs)  # type: ignore[arg-type]
    return console


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def when(epoch_s: float | None, empty: str = "never") -> str:
    """Epoch seconds -> ``2026-11-20 10:04 UTC`` (``empty`` for None or 0)."""
    if not epoch_s:
        return empty
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%d %H:%M UTC")

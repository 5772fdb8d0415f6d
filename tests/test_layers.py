"""Lower layers never import upper ones: the agent's side (and what both sides share) never imports the server,
the console's CLI or each other upwards; read from every import statement, lazy ones inside functions too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "cloudtap"
#: package -> packages it must never import (at module level or inside a function).
FORBIDDEN = {
    "agent": ("cloudtap.server", "cloudtap.cli"),
    "capture": ("cloudtap.server", "cloudtap.cli", "cloudtap.agent", "cloudtap.meter", "cloudtap.ship"),
    "decode": ("cloudtap.server", "cloudtap.cli", "cloudtap.agent", "cloudtap.meter", "cloudtap.ship"),
    "meter": ("cloudtap.server", "cloudtap.cli", "cloudtap.agent", "cloudtap.ship"),
    "l7": ("cloudtap.server", "cloudtap.cli", "cloudtap.agent", "cloudtap.ship"),
    "ship": ("cloudtap.server", "cloudtap.cli", "cloudtap.agent"),
    "broker": ("cloudtap.server", "cloudtap.cli"),
    "schema": ("cloudtap.server", "cloudtap.cli", "cloudtap.agent", "cloudtap.capture", "cloudtap.decode",
               "cloudtap.meter", "cloudtap.ship"),  # fmt: skip
    "inventory": ("cloudtap.server", "cloudtap.cli"),
}
#: Modules below every package (used by agent and server alike).
SHARED = ("errors.py", "config_loader.py", "tls.py", "clickhouse_sql.py", "_kernel_opts.py", "_kernel_cache.py")


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def offenders(files: list[Path], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(
        f"{path.relative_to(SRC.parent)} imports {name}"
        for path in files
        for name in imported(path)
        if any(name == f or name.startswith(f + ".") for f in forbidden)
    )


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_lower_package_never_imports_an_upper_one(package: str) -> None:
    assert offenders(sorted((SRC / package).rglob("*.py")), FORBIDDEN[package]) == []


def test_what_both_sides_share_imports_neither() -> None:
    shared = [SRC / name for name in SHARED]
    assert all(p.exists() for p in shared)
    everything_above = ("cloudtap.server", "cloudtap.cli", "cloudtap.agent", "cloudtap.meter", "cloudtap.ship")
    assert offenders(shared, everything_above) == []

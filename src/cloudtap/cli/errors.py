"""CliError: a command failure reported in one line, with its exit code."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console


class CliError(Exception):
    """A failure to report in one line (exit code ``code``: 2 bad input, 1 anything else)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


@contextmanager
def reported() -> Iterator[None]:
    """Run a command's body: a CliError is printed as ``error: ...`` on stderr and exits with its code."""
    try:
        yield
    except CliError as exc:
        Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(exc.code) from exc

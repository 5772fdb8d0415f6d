"""The `cloudtap` command line.

``app`` is built on first access (module ``__getattr__``). The console script run as
``cloudtap meter ...`` gets an app holding only the meter command, so metering a file does not
import the server, agent, query or analysis commands (and pandas) first.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import typer

from cloudtap import __version__

_HELP = "East-west traffic collection and analysis for private clouds."


def _new_app(cls: type[typer.Typer] = typer.Typer) -> typer.Typer:
    return cls(
        name="cloudtap",
        help=_HELP,
        no_args_is_help=True,
        rich_markup_mode="rich",
        pretty_exceptions_enable=False,
    )


def build_app() -> typer.Typer:
    """The full command line, every command registered."""
    from cloudtap.cli.agent_cmd import agent_app
    from cloudtap.cli.analyse_cmd import add_analysis_commands
    from cloudtap.cli.audit_cmd import audit_command
    from cloudtap.cli.auth_cmd import login_command, logout_command, token_app, whoami_command
    from cloudtap.cli.distribution_cmd import add_distribution_commands
    from cloudtap.cli.findings_cmd import findings_app
    from cloudtap.cli.fleet_cmd import fleet_app
    from cloudtap.cli.inventory_cmd import inventory_app
    from cloudtap.cli.meter_cmd import meter_command
    from cloudtap.cli.pcap_cmd import pcap_command
    from cloudtap.cli.query_cmd import query_app
    from cloudtap.cli.server_cmd import import_command, server_app
    from cloudtap.cli.user_cmd import user_app
    from cloudtap.synth.cli import synth_command

    app = _new_app()
    app.command("meter")(meter_command)
    app.command("pcap")(pcap_command)
    app.command("synth")(synth_command)
    app.add_typer(agent_app, name="agent")
    add_distribution_commands(fleet_app)  # fleet destination / distribution / policy add --dry-run
    app.add_typer(fleet_app, name="fleet")
    app.add_typer(server_app, name="server")
    app.command("import")(import_command)
    app.add_typer(query_app, name="query")
    app.add_typer(inventory_app, name="inventory")
    add_analysis_commands(app)
    app.add_typer(findings_app, name="findings")
    app.command("login")(login_command)
    app.command("logout")(logout_command)
    app.command("whoami")(whoami_command)
    app.add_typer(token_app, name="token")
    app.add_typer(user_app, name="user")
    app.command("audit")(audit_command)
    app.command()(version)
    return app


class _ExitWhenDone(typer.Typer):
    """Ends the process as soon as the command returns, output flushed, skipping interpreter teardown.

    Finalising numba/LLVM and the imported modules takes ~0.15 s, a third of a small capture's
    run. Used only by the console script (never in-process: tests and atexit users keep it).
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        code: object = 0
        try:
            super().__call__(*args, **kwargs)
        except SystemExit as exc:
            code = exc.code
        if isinstance(code, str):
            print(code, file=sys.stderr)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # closed pipe: nothing left to deliver
                pass
        os._exit(code if isinstance(code, int) else 0 if code is None else 1)


def meter_app(exit_when_done: bool = False) -> typer.Typer:
    """Only ``cloudtap meter`` (same usage, options and help as in the full app)."""
    from cloudtap.cli.meter_cmd import meter_command

    app = _new_app(_ExitWhenDone if exit_when_done else typer.Typer)
    app.command("meter")(meter_command)
    app.callback()(_group)  # a group, so ``meter`` stays a subcommand
    return app


def _group() -> None:
    """East-west traffic collection and analysis for private clouds."""


def version() -> None:
    """Print the cloudtap version."""
    typer.echo(__version__)


def _meter_only(argv: list[str], script: bool = True) -> bool:
    """True for ``cloudtap meter ...`` (``script``: only when run as the ``cloudtap`` console script)."""
    return argv[1:2] == ["meter"] and (not script or Path(argv[0]).name == "cloudtap")


def __getattr__(name: str) -> typer.Typer:
    if name == "app":
        app = meter_app(exit_when_done=True) if _meter_only(sys.argv) else build_app()
        globals()["app"] = app
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":  # pragma: no cover
    (meter_app(exit_when_done=True) if _meter_only(sys.argv, script=False) else build_app())()

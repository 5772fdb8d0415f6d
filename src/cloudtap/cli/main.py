"""The `cloudtap` command line."""

from __future__ import annotations

import typer

from cloudtap import __version__
from cloudtap.cli.agent_cmd import agent_app
from cloudtap.cli.analyse_cmd import add_analysis_commands
from cloudtap.cli.audit_cmd import audit_command
from cloudtap.cli.auth_cmd import login_command, logout_command, token_app, whoami_command
from cloudtap.cli.fleet_cmd import fleet_app
from cloudtap.cli.inventory_cmd import inventory_app
from cloudtap.cli.meter_cmd import meter_command
from cloudtap.cli.pcap_cmd import pcap_command
from cloudtap.cli.query_cmd import query_app
from cloudtap.cli.server_cmd import import_command, server_app
from cloudtap.cli.user_cmd import user_app
from cloudtap.synth.cli import synth_command

app = typer.Typer(
    name="cloudtap",
    help="East-west traffic collection and analysis for private clouds.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
app.command("meter")(meter_command)
app.command("pcap")(pcap_command)
app.command("synth")(synth_command)
app.add_typer(agent_app, name="agent")
app.add_typer(fleet_app, name="fleet")
app.add_typer(server_app, name="server")
app.command("import")(import_command)
app.add_typer(query_app, name="query")
app.add_typer(inventory_app, name="inventory")
add_analysis_commands(app)
app.command("login")(login_command)
app.command("logout")(logout_command)
app.command("whoami")(whoami_command)
app.add_typer(token_app, name="token")
app.add_typer(user_app, name="user")
app.command("audit")(audit_command)


@app.command()
def version() -> None:
    """Print the cloudtap version."""
    typer.echo(__version__)


if __name__ == "__main__":  # pragma: no cover
    app()

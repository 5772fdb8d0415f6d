"""`cloudtap audit`: the server's audit log (admins): packet retrievals, changes, failed logins."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from cloudtap.cli.auth_cmd import JsonOpt
from cloudtap.cli.errors import reported
from cloudtap.cli.render import make_console
from cloudtap.cli.server_options import CaOpt, Remote, ServerOpt, TokenOpt

#: Keys every record has: shown in their own columns, not in the summary.
_FIXED = ("time", "time_ns", "action", "actor", "outcome")
_OUTCOME_STYLE = {"ok": "green", "refused": "yellow", "failed": "red"}
_RELATIVE = re.compile(r"(?:\d+(?:\.\d+)?(?:ns|us|ms|min|s|m|h|d|w))+")


def since_param(since: str | None) -> str | None:
    """``1h`` -> ``-1h`` (a duration means that long ago); anything else as given."""
    if since and _RELATIVE.fullmatch(since.strip().lower()):
        return f"-{since}"
    return since


def _value(v: Any) -> str:
    if isinstance(v, list):
        text = ",".join(_value(x) for x in v)
    elif isinstance(v, dict):
        text = json.dumps(v, separators=(",", ":"), default=str)
    else:
        text = str(v)
    return text if len(text) <= 48 else text[:47] + "…"


def summary(record: dict[str, Any]) -> str:
    """What the act was done to and how it ended: ``user=bob vm=db-01 status=413 ...``."""
    return " ".join(
        f"{k}={_value(v)}" for k, v in record.items() if k not in _FIXED and v not in (None, "", [])
    )


def audit_command(
    since: Annotated[
        str | None, typer.Option("--since", help="from this long ago (1h, -1d) or this time")
    ] = None,
    action: Annotated[
        str | None, typer.Option("--action", help="an action (auth.login) or a family ending in '.' (pcap.)")
    ] = None,
    actor: Annotated[str | None, typer.Option("--actor", help="who did it")] = None,
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, max=100_000, help="the newest N records")
    ] = 200,
    server: ServerOpt = None,
    token: TokenOpt = None,
    ca: CaOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Read the audit log: who pulled which packets, who changed what, failed logins (oldest first)."""
    with reported():
        params = {"since": since_param(since), "action": action, "actor": actor, "limit": limit}
        records = Remote(server, token, ca).client().get_json("/api/v1/audit", params)
    if as_json:
        typer.echo(json.dumps(records, indent=2))
        return
    table = Table(title=f"audit: {len(records)} record(s)", header_style="bold cyan", row_styles=["", "dim"])
    for col in ("time (UTC)", "actor", "action", "outcome", "target"):
        table.add_column(col, no_wrap=col.startswith("time"), overflow="fold")
    for r in records:
        outcome = str(r.get("outcome", ""))
        stamp = str(r.get("time", "")).replace("T", " ")[:19]
        table.add_row(stamp, str(r.get("actor") or "-"), str(r.get("action", "")),
                      Text(outcome, style=_OUTCOME_STYLE.get(outcome, "")), summary(r))  # fmt: skip
    make_console().print(table)

"""`cloudtap findings list | show | ack | mute | unmute | run | rules | rule-set | rule-delete`.

Through the server API (``--server URL``, ``--token``, ``--ca``) or, for ``list``, ``show`` and ``run``,
an embedded data directory read directly (``--data DIR``: the findings engine runs in this process).
``--json`` prints the API's answer. Exit codes: 0 ok, 2 bad input, 1 server or store unreachable.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import quote, urlencode

import typer
from rich.console import Console
from rich.table import Table

from cloudtap.cli.analyse_cmd import DataOpt, JsonOpt, _main, _run
from cloudtap.cli.errors import CliError
from cloudtap.cli.server_options import CaOpt, Remote, ServerOpt, TokenOpt

findings_app = typer.Typer(help="What the findings engine reported: list, show, ack, mute, run; isolation rules.",
                           no_args_is_help=True)  # fmt: skip
NS = 1_000_000_000
ReasonOpt = Annotated[str, typer.Option("--reason", "-m", help="why (recorded with your name)")]
_SEV_STYLE = {"critical": "bold red", "warning": "yellow", "info": "dim"}


def _window_s(time_from: str, time_to: str | None) -> tuple[int, int]:
    from cloudtap.server.analyse.window import resolve_window

    try:
        w = resolve_window(time_from, time_to)
    except ValueError as exc:
        raise CliError(str(getattr(exc, "message", exc)), 2) from exc
    return w.start_ns // NS, w.end_ns // NS


def _local_list(kind: str | None, severity: str | None, state: str | None, time_from: str | None,
                time_to: str | None, limit: int) -> Callable[[Any], Any]:  # fmt: skip
    def call(store: Any) -> Any:
        from cloudtap.server.findings.store import FindingStore

        t0, t1 = _window_s(time_from, time_to) if time_from else (None, None)
        found = FindingStore(store).find(None, kind, severity, state, t0, t1, limit)
        return {"count": len(found), "findings": [f.model_dump(mode="json") for f in found]}

    return call


@findings_app.command("list")
def list_command(
    kind: Annotated[str | None, typer.Option("--kind", help="new_edge, burst, scan...")] = None,
    severity: Annotated[str | None, typer.Option("--severity", help="least severity: info, warning, critical")] = None,
    state: Annotated[str | None, typer.Option("--state", help="open, acknowledged, muted")] = None,
    since: Annotated[str | None, typer.Option("--since", help="findings of the window ending now: 1h, 1d")] = None,
    time_from: Annotated[str | None, typer.Option("--from", help="window start (wins over --since)")] = None,
    time_to: Annotated[str | None, typer.Option("--to", help="window end (default now)")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="rows shown")] = 50,
    server: ServerOpt = None, token: TokenOpt = None, ca: CaOpt = None, data: DataOpt = None, as_json: JsonOpt = False,
) -> None:  # fmt: skip
    """Findings, newest first."""
    start = time_from or (None if since is None else f"-{since.lstrip('-')}")
    params = {k: v for k, v in {"kind": kind, "severity": severity, "state": state, "time_from": start,
                                "time_to": time_to, "limit": limit}.items() if v is not None}  # fmt: skip
    query = urlencode(params)
    _main(lambda: _run(Remote(server, token, ca), data, "GET", f"/api/v1/findings?{query}", None,
                       _local_list(kind, severity, state, start, time_to, limit)), as_json, show_list)  # fmt: skip


@findings_app.command("show")
def show_command(
    finding_id: Annotated[str, typer.Argument(help="the finding's id")],
    server: ServerOpt = None, token: TokenOpt = None, ca: CaOpt = None, data: DataOpt = None, as_json: JsonOpt = False,
) -> None:  # fmt: skip
    """One finding: subject, window, figures, baseline, how to reproduce, who acted on it."""

    def local(store: Any) -> Any:
        from cloudtap.server.findings.store import FindingStore

        found = FindingStore(store).get(finding_id)
        if found is None:
            raise CliError(f"no finding {finding_id!r}", 2)
        return found.model_dump(mode="json")

    path = f"/api/v1/findings/{quote(finding_id, safe='')}"
    _main(lambda: _run(Remote(server, token, ca), data, "GET", path, None, local),
          as_json, show_one)  # fmt: skip


def _act(action: str, finding_id: str, body: dict[str, Any], remote: Remote, as_json: bool) -> None:
    def show(answer: Any, console: Console) -> None:
        console.print(
            f"{action} {finding_id}: recorded for {answer['user']} at {answer['at']}", highlight=False
        )

    path = f"/api/v1/findings/{quote(finding_id, safe='')}/{action}"
    _main(lambda: _run(remote, None, "POST", path, body, lambda s: None),
          as_json, show)  # fmt: skip


@findings_app.command("ack")
def ack_command(
    finding_id: Annotated[str, typer.Argument(help="the finding's id")], reason: ReasonOpt = "",
    server: ServerOpt = None, token: TokenOpt = None, ca: CaOpt = None, as_json: JsonOpt = False,
) -> None:  # fmt: skip
    """Acknowledge a finding (with why)."""
    _act("ack", finding_id, {"reason": reason}, Remote(server, token, ca), as_json)


@findings_app.command("mute")
def mute_command(
    finding_id: Annotated[str, typer.Argument(help="the finding's id")], reason: ReasonOpt = "",
    until: Annotated[str | None, typer.Option("--until", help="+2h, ISO 8601 or epoch; default until unmuted")] = None,
    server: ServerOpt = None, token: TokenOpt = None, ca: CaOpt = None, as_json: JsonOpt = False,
) -> None:  # fmt: skip
    """Mute a finding and later ones of its kind and subject."""
    _act("mute", finding_id, {"reason": reason, "until": until}, Remote(server, token, ca), as_json)


@findings_app.command("unmute")
def unmute_command(
    finding_id: Annotated[str, typer.Argument(help="the finding's id")], reason: ReasonOpt = "",
    server: ServerOpt = None, token: TokenOpt = None, ca: CaOpt = None, as_json: JsonOpt = False,
) -> None:  # fmt: skip
    """Lift a mute."""
    _act("unmute", finding_id, {"reason": reason}, Remote(server, token, ca), as_json)


@findings_app.command("run")
def run_command(
    time_from: Annotated[str, typer.Option("--from", help="window start: ISO 8601, epoch, -3h")],
    time_to: Annotated[str | None, typer.Option("--to", help="window end (default now)")] = None,
    server: ServerOpt = None, token: TokenOpt = None, ca: CaOpt = None, data: DataOpt = None, as_json: JsonOpt = False,
) -> None:  # fmt: skip
    """Run the findings engine over a past window (whole minutes), on the server or on --data DIR."""

    def local(store: Any) -> Any:
        import time

        from cloudtap.server.findings.engine import FindingsEngine
        from cloudtap.server.settings import load_server_settings

        t0, t1 = _window_s(time_from, time_to)
        started = time.perf_counter()
        done = FindingsEngine(store, load_server_settings(None).findings).run_range(t0, t1)
        return {"minutes": done["minutes"], "new": done["new"], "extended": done["extended"],
                "elapsed_s": round(time.perf_counter() - started, 3)}  # fmt: skip

    body = {"time_from": time_from, "time_to": time_to}
    _main(lambda: _run(Remote(server, token, ca), data, "POST", "/api/v1/findings/run", body, local), as_json,
          lambda a, c: c.print(f"{a['minutes']} minutes: {a['new']} new findings, {a['extended']} extended "
                               f"({a['elapsed_s']} s)", highlight=False))  # fmt: skip


@findings_app.command("rules")
def rules_command(
    server: ServerOpt = None, token: TokenOpt = None, ca: CaOpt = None, as_json: JsonOpt = False
) -> None:
    """Isolation rules in force."""

    def show(rules: Any, console: Console) -> None:
        table = Table("name", "rule", "severity", "version", "by", "at")
        for r in rules:
            a = r["a"].get("project") or r["a"].get("cidr")
            b = r["b"].get("project") or r["b"].get("cidr")
            table.add_row(r["name"], f"{a} {'<->' if r['both_ways'] else '->'} {b}", r["severity"], str(r["version"]),
                          r["updated_by"], r["updated_at"])  # fmt: skip
        console.print(table)

    _main(lambda: _run(Remote(server, token, ca), None, "GET", "/api/v1/findings/rules", None, lambda s: None),
          as_json, show)  # fmt: skip


@findings_app.command("rule-set")
def rule_set_command(
    name: Annotated[str, typer.Argument(help="rule name")],
    a_project: Annotated[str | None, typer.Option("--a-project", help="one side: a project")] = None,
    a_cidr: Annotated[str | None, typer.Option("--a-cidr", help="one side: a subnet")] = None,
    b_project: Annotated[str | None, typer.Option("--b-project", help="other side: a project")] = None,
    b_cidr: Annotated[str | None, typer.Option("--b-cidr", help="other side: a subnet")] = None,
    one_way: Annotated[bool, typer.Option("--one-way", help="only a -> b is forbidden")] = False,
    severity: Annotated[str, typer.Option("--severity", help="info, warning, critical")] = "critical",
    description: Annotated[str, typer.Option("--description")] = "",
    server: ServerOpt = None, token: TokenOpt = None, ca: CaOpt = None, as_json: JsonOpt = False,
) -> None:  # fmt: skip
    """Save an isolation rule: side a must not talk to side b (a new version when it exists)."""
    body = {"name": name, "description": description, "both_ways": not one_way, "severity": severity,
            "a": {k: v for k, v in {"project": a_project, "cidr": a_cidr}.items() if v},
            "b": {k: v for k, v in {"project": b_project, "cidr": b_cidr}.items() if v}}  # fmt: skip
    _main(lambda: _run(Remote(server, token, ca), None, "PUT", f"/api/v1/findings/rules/{name}", body, lambda s: None),
          as_json, lambda r, c: c.print(f"rule {r['name']} saved: version {r['version']}", highlight=False))  # fmt: skip


@findings_app.command("rule-delete")
def rule_delete_command(
    name: Annotated[str, typer.Argument(help="rule name")],
    server: ServerOpt = None, token: TokenOpt = None, ca: CaOpt = None,
) -> None:  # fmt: skip
    """Retire an isolation rule (its history is kept)."""
    _main(lambda: _run(Remote(server, token, ca), None, "DELETE", f"/api/v1/findings/rules/{name}", None, lambda s: None),
          False, lambda r, c: c.print(f"rule {name} retired", highlight=False))  # fmt: skip


# --- rendering -------------------------------------------------------------------------------------------


def show_list(answer: Any, console: Console) -> None:
    """A table of findings."""
    table = Table("id", "kind", "severity", "state", "window (UTC)", "n", "summary", show_lines=False)
    for f in answer["findings"]:
        sev = f["severity"]
        table.add_row(f["id"], f["kind"], f"[{_SEV_STYLE[sev]}]{sev}[/]", f["state"],
                      f"{f['time_from'][:16]} .. {f['time_to'][11:16]}", str(f["detections"]), f["summary"])  # fmt: skip
    console.print(table)
    console.print(f"{answer['count']} finding(s)", highlight=False)


def show_one(f: Any, console: Console) -> None:
    """One finding in full."""
    console.print(
        f"[bold]{f['kind']}[/] [{_SEV_STYLE[f['severity']]}]{f['severity']}[/] {f['state']}  {f['id']}"
    )
    console.print(f["summary"], highlight=False)
    console.print(f"subject: {f['subject']['label']}", highlight=False)
    console.print(
        f"window:  {f['time_from']} .. {f['time_to']} ({f['detections']} detection(s))", highlight=False
    )
    console.print(f"figures: {json.dumps(f['figures'])}", highlight=False, soft_wrap=True)
    console.print(f"baseline: {json.dumps(f['baseline'])}", highlight=False, soft_wrap=True)
    console.print(f"reproduce: {f['reproduce']}", highlight=False, soft_wrap=True)
    for a in f["actions"]:
        console.print(f"{a['at']} {a['action']} by {a['user']}: {a['reason']}", highlight=False)


__all__ = ["findings_app"]

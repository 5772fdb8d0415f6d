"""`cloudtap login | logout | whoami` and `cloudtap token create | list | revoke`: API tokens.

``login`` trades a user name and password for a named, expiring API token and saves it in the
credentials file (:mod:`cloudtap.cli.credentials`); every other command then sends it. A token is
printed only by ``token create``, once.
"""

from __future__ import annotations

import json
import socket
import sys
import urllib.parse
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from cloudtap.cli.credentials import CredentialsFile, SavedLogin
from cloudtap.cli.errors import CliError, reported
from cloudtap.cli.render import make_console, when
from cloudtap.cli.server_client import ServerClient, ServerError
from cloudtap.cli.server_options import CaOpt, Remote, ServerOpt, TokenOpt

JsonOpt = Annotated[bool, typer.Option("--json", help="print the API's JSON answer")]
DaysOpt = Annotated[
    float | None, typer.Option("--days", min=0.001, max=3650, help="token lifetime (default: the server's)")
]
PasswordFileOpt = Annotated[
    Path | None, typer.Option("--password-file", help="read the password from this file ('-': stdin)")
]

token_app = typer.Typer(help="Your API tokens: create (shown once), list, revoke.", no_args_is_help=True)


def read_password(path: Path | None, prompt: str, confirm: bool = False) -> str:
    """The password from ``path`` (first line; ``-`` is stdin), else prompted without echo."""
    if path is None:
        return str(typer.prompt(prompt, hide_input=True, confirmation_prompt=confirm))
    try:
        text = sys.stdin.readline() if str(path) == "-" else path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot read the password file {path}: {exc.strerror}", 2) from exc
    password = text.splitlines()[0] if text.strip() else ""
    if not password:
        raise CliError(f"the password file {path} is empty", 2)
    return password


def token_path(token_id: str) -> str:
    """The API path of one token."""
    return f"/api/v1/auth/tokens/{urllib.parse.quote(token_id, safe='')}"


def describe_bindings(bindings: list[dict[str, Any]]) -> str:
    """``admin on all projects; operator on shop, web``."""
    parts = [f"{b['role']} on " + (", ".join(b["projects"]) if b.get("projects") is not None else "all projects")
             for b in bindings]  # fmt: skip
    return "; ".join(parts) or "no role"


def _revoke_quietly(base: str, old: SavedLogin, ca: Path | None) -> None:
    try:
        ServerClient(base, old.token, ca, timeout_s=10).delete_json(token_path(old.token_id))
    except CliError:
        pass  # expired or already revoked: nothing to clean up


def login_command(
    server: ServerOpt = None,
    user: Annotated[str | None, typer.Option("--user", "-u", help="user name (prompted if missing)")] = None,
    password_file: PasswordFileOpt = None,
    token_name: Annotated[
        str | None, typer.Option("--token-name", help="name of the new token (default cli@<this host>)")
    ] = None,
    days: DaysOpt = None,
    ca: CaOpt = None,
) -> None:
    """Log in: trade your password for an API token, saved (0600) for the next commands."""
    with reported():
        credentials = CredentialsFile()
        client = Remote(server, None, ca).client(anonymous=True)
        name = user or str(typer.prompt("user"))
        password = read_password(password_file, f"password for {name}")
        body: dict[str, Any] = {"username": name, "password": password,
                                "name": token_name or f"cli@{socket.gethostname()}"[:128]}  # fmt: skip
        if days is not None:
            body["days"] = days
        try:
            issued = client.post_json("/api/v1/auth/token", body)
        except ServerError as exc:
            if exc.status == 401:
                raise CliError(
                    f"login to {client.base} refused: {exc.detail or 'wrong user name or password'}"
                ) from exc
            raise
        previous = credentials.get(client.base)
        ca_file = str(client.ca_file.resolve()) if client.ca_file else None
        credentials.save(SavedLogin(client.base, issued["token"], issued["id"], issued["user"],
                                    float(issued["expires_at"]), ca_file))  # fmt: skip
        if previous is not None and previous.token_id != issued["id"]:
            _revoke_quietly(client.base, previous, client.ca_file)
        me = ServerClient(client.base, issued["token"], client.ca_file).get_json("/api/v1/auth/me")
    console = make_console(soft_wrap=True)
    console.print(f"logged in to [bold]{client.base}[/] as [bold]{me['name']}[/]: "
                  f"{describe_bindings(me.get('bindings', []))}", highlight=False)  # fmt: skip
    console.print(f"token {issued['name']!r} (id {issued['id']}) expires {when(issued['expires_at'])}; "
                  f"saved in {credentials.path}", highlight=False)  # fmt: skip


def logout_command(server: ServerOpt = None, ca: CaOpt = None) -> None:
    """Log out: revoke the saved token on the server and forget it here."""
    console = make_console(stderr=True, soft_wrap=True)
    with reported():
        credentials = CredentialsFile()
        remote = Remote(server, None, ca)
        url = remote.url(credentials)
        saved = credentials.get(url)
        if saved is None:
            console.print(f"not logged in to {url}: nothing to do", highlight=False)
            return
        problem = None
        try:
            ca_file = ca or (Path(saved.ca_file) if saved.ca_file else None)
            ServerClient(url, saved.token, ca_file, timeout_s=20).delete_json(token_path(saved.token_id))
        except ServerError as exc:
            problem = None if exc.status == 401 else str(exc)  # 401: it no longer worked anyway
        credentials.remove(url)
    if problem:
        console.print(f"[yellow]warning:[/] the token (id {saved.token_id}) could not be revoked: {problem}; it stays "
                      f"valid until {when(saved.expires_at)} (an admin can run `cloudtap token revoke "
                      f"{saved.token_id}`)", highlight=False)  # fmt: skip
    console.print(f"logged out of {url} ({saved.user}); removed from {credentials.path}", highlight=False)
    if problem:
        raise typer.Exit(1)


def whoami_command(
    server: ServerOpt = None, token: TokenOpt = None, ca: CaOpt = None, as_json: JsonOpt = False
) -> None:
    """Who the server thinks you are: user, roles and where they hold."""
    with reported():
        remote = Remote(server, token, ca)
        client = remote.client()
        me = client.get_json("/api/v1/auth/me")
        saved = None if token else remote.saved()
    if as_json:
        typer.echo(json.dumps(me, indent=2))
        return
    console = make_console(soft_wrap=True)
    console.print(f"[bold]{me['name']}[/] on {client.base} (via {me.get('via', '?')})", highlight=False)
    console.print(f"roles: {describe_bindings(me.get('bindings', []))}", highlight=False)
    if saved is not None and saved.token == client.token:
        console.print(f"token id {saved.token_id} expires {when(saved.expires_at)}", highlight=False)


# --- tokens -----------------------------------------------------------------------------------------


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Option("--name", help="what the token is for (e.g. grafana, ci)")],
    days: DaysOpt = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    ca: CaOpt = None,
) -> None:
    """Create an API token for yourself; it is printed once, on stdout, and never again."""
    with reported():
        body: dict[str, Any] = {"name": name} | ({"days": days} if days is not None else {})
        issued = Remote(server, token, ca).client().post_json("/api/v1/auth/tokens", body)
    make_console(stderr=True, soft_wrap=True).print(f"token {issued['name']!r} (id {issued['id']}) for {issued['user']}, expires "
                                    f"{when(issued['expires_at'])}; shown only now:", highlight=False)  # fmt: skip
    typer.echo(issued["token"])


def _state(t: dict[str, Any], now: float) -> str:
    if t.get("revoked_at"):
        return f"[red]revoked {when(t['revoked_at'])}[/]"
    if t["expires_at"] <= now:
        return "[yellow]expired[/]"
    return "[green]active[/]"


@token_app.command("list")
def token_list(
    all_users: Annotated[bool, typer.Option("--all", help="every user's tokens (admins)")] = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
    ca: CaOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List your tokens (or everyone's with --all): never their secrets."""
    import time

    with reported():
        params = {"all_users": "true"} if all_users else None
        rows = Remote(server, token, ca).client().get_json("/api/v1/auth/tokens", params)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    now = time.time()
    table = Table(title=f"{len(rows)} API token(s)", header_style="bold cyan")
    for col in ("id", "user", "name", "created", "expires", "last used", "state"):
        table.add_column(col)
    for t in rows:
        table.add_row(t["id"], t["user"], t["name"], when(t["created_at"]), when(t["expires_at"]),
                      when(t.get("last_used")), _state(t, now))  # fmt: skip
    make_console().print(table)


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[str, typer.Argument(help="token id (see `cloudtap token list`)")],
    server: ServerOpt = None,
    token: TokenOpt = None,
    ca: CaOpt = None,
) -> None:
    """Revoke a token now (yours; admins: anyone's)."""
    with reported():
        remote = Remote(server, token, ca)
        client = remote.client()
        client.delete_json(token_path(token_id))
        credentials = CredentialsFile()
        saved = credentials.get(client.base)
        forgotten = saved is not None and saved.token_id == token_id and credentials.remove(client.base)
    make_console(soft_wrap=True).print(f"revoked token {token_id}" + (f" (your saved login: removed from {credentials.path})"
                                                        if forgotten else ""), highlight=False)  # fmt: skip

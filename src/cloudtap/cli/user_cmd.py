"""`cloudtap user add | list | disable | enable | passwd | bind`: local users and their role bindings.

Needs an admin login (``users:manage``), except ``passwd`` for your own password. Passwords are
prompted without echo (twice for a new one) or read from ``--password-file``; never printed.
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Annotated, Any

import typer
from rich.table import Table

from cloudtap.cli.auth_cmd import JsonOpt, PasswordFileOpt, describe_bindings, read_password
from cloudtap.cli.errors import reported
from cloudtap.cli.render import make_console, when
from cloudtap.cli.server_options import CaOpt, Remote, ServerOpt, TokenOpt

NameArg = Annotated[str, typer.Argument(help="user name")]
RoleOpt = Annotated[str, typer.Option("--role", help="viewer | operator | admin")]
ProjectsOpt = Annotated[
    list[str] | None,
    typer.Option("--project", help="limit the role to this project (repeatable; none: every project)"),
]

user_app = typer.Typer(help="Users and their roles (admins): add, list, disable, enable, passwd, bind.",
                       no_args_is_help=True)  # fmt: skip


def _path(name: str, tail: str = "") -> str:
    return f"/api/v1/users/{urllib.parse.quote(name, safe='')}{tail}"


def _binding(role: str, projects: list[str] | None) -> dict[str, Any]:
    return {"role": role, "projects": list(projects) if projects else None}


def _said(text: str) -> None:
    make_console(soft_wrap=True).print(text, highlight=False)


@user_app.command("add")
def add_command(
    name: NameArg,
    role: RoleOpt = "viewer",
    project: ProjectsOpt = None,
    password_file: PasswordFileOpt = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    ca: CaOpt = None,
) -> None:
    """Add a local user with a role, on every project or only on --project ones."""
    with reported():
        client = Remote(server, token, ca).client()
        password = read_password(password_file, f"password for {name}", confirm=True)
        user = client.post_json("/api/v1/users", {"name": name, "password": password,
                                                  "bindings": [_binding(role, project)]})  # fmt: skip
    _said(f"added user {user['name']}: {describe_bindings(user['bindings'])}")


@user_app.command("list")
def list_command(
    server: ServerOpt = None, token: TokenOpt = None, ca: CaOpt = None, as_json: JsonOpt = False
) -> None:
    """Every user: source, disabled, roles and projects, last login."""
    with reported():
        users = Remote(server, token, ca).client().get_json("/api/v1/users")
    if as_json:
        typer.echo(json.dumps(users, indent=2))
        return
    table = Table(title=f"{len(users)} user(s)", header_style="bold cyan")
    for col in ("name", "source", "disabled", "roles / projects", "last login"):
        table.add_column(col)
    for u in users:
        table.add_row(u["name"], u["source"], "[red]yes[/]" if u["disabled"] else "no",
                      describe_bindings(u["bindings"]), when(u.get("last_login")))  # fmt: skip
    make_console().print(table)


@user_app.command("disable")
def disable_command(
    name: NameArg, server: ServerOpt = None, token: TokenOpt = None, ca: CaOpt = None
) -> None:
    """Disable a user: their sessions end and their tokens stop working."""
    with reported():
        Remote(server, token, ca).client().post_json(_path(name, "/disable"))
    _said(f"disabled user {name}: sessions ended, tokens refused")


@user_app.command("enable")
def enable_command(name: NameArg, server: ServerOpt = None, token: TokenOpt = None, ca: CaOpt = None) -> None:
    """Enable a disabled user again."""
    with reported():
        Remote(server, token, ca).client().post_json(_path(name, "/enable"))
    _said(f"enabled user {name}")


@user_app.command("passwd")
def passwd_command(
    name: NameArg,
    password_file: PasswordFileOpt = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    ca: CaOpt = None,
) -> None:
    """Set a user's password (yours, or anyone's as an admin); their browser sessions end."""
    with reported():
        client = Remote(server, token, ca).client()
        password = read_password(password_file, f"new password for {name}", confirm=True)
        client.put_json(_path(name, "/password"), {"password": password})
    _said(f"password of {name} changed")


@user_app.command("bind")
def bind_command(
    name: NameArg,
    role: RoleOpt,
    project: ProjectsOpt = None,
    add: Annotated[
        bool, typer.Option("--add", help="add this binding to the user's others (default: replace)")
    ] = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
    ca: CaOpt = None,
) -> None:
    """Give a user a role (on every project, or on --project ones), replacing their bindings unless --add."""
    with reported():
        client = Remote(server, token, ca).client()
        bindings = client.get_json(_path(name))["bindings"] if add else []
        user = client.put_json(_path(name, "/bindings"), [*bindings, _binding(role, project)])
    _said(f"{user['name']}: {describe_bindings(user['bindings'])}")

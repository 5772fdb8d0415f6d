"""`cloudtap user add | list | disable | enable | passwd | bind` against a real server, as its admin."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from auth_server import ADMIN, PASSWORD, add_admin, serve, settings_for
from typer.testing import CliRunner

from cloudtap.cli.main import app as cli_app

runner = CliRunner()
BOB_PASSWORD = "bob's long enough password"


@pytest.fixture()
def url(open_store: Callable[..., Any], tmp_path: Path) -> Iterator[str]:
    """A server with one admin, who is logged in (saved credentials)."""
    from cloudtap.server.api.app import create_app

    app = create_app(settings_for(tmp_path / "server"), open_store())
    add_admin(app)
    with serve(app) as served:
        cli("login", "--server", served, "--user", ADMIN, input=f"{PASSWORD}\n")
        yield served


def cli(*args: str, code: int = 0, input: str | None = None) -> Any:
    result = runner.invoke(cli_app, list(args), input=input)
    assert result.exit_code == code, result.output
    return result


def test_add_list_disable_enable(url: str, tmp_path: Path) -> None:
    pw = tmp_path / "bob.pw"
    pw.write_text(BOB_PASSWORD + "\n")
    added = cli("user", "add", "bob", "--role", "operator", "--project", "shop", "--project", "web",
                "--password-file", str(pw)).output  # fmt: skip
    assert "added user bob: operator on shop, web" in added and BOB_PASSWORD not in added
    listed = cli("user", "list").output
    assert "bob" in listed and "local" in listed and "operator on shop, web" in listed and "never" in listed
    assert "admin on all projects" in listed
    assert "disabled user bob" in cli("user", "disable", "bob").output
    assert "yes" in cli("user", "list").output
    refused = cli("login", "--server", url, "--user", "bob", "--password-file", str(pw), code=1).output
    assert "refused" in refused
    cli("user", "enable", "bob")
    cli("login", "--server", url, "--user", "bob", "--password-file", str(pw))
    # bob (an operator) may not manage users
    denied = cli("user", "list", code=1).output
    assert "permission denied" in denied and "users:manage" in denied


def test_passwords_are_prompted_twice_and_bindings_replaced_or_added(url: str) -> None:
    cli("user", "add", "carol", input=f"{BOB_PASSWORD}\n{BOB_PASSWORD}\n")  # viewer everywhere by default
    assert "viewer on all projects" in cli("user", "list").output
    assert "at least 10 characters" in cli("user", "passwd", "carol", input="short\nshort\n", code=2).output
    cli("user", "passwd", "carol", input="carol's new password\ncarol's new password\n")
    assert (
        "operator on shop" in cli("user", "bind", "carol", "--role", "operator", "--project", "shop").output
    )
    both = cli("user", "bind", "carol", "--role", "viewer", "--add").output
    assert "carol: operator on shop; viewer on all projects" in both
    unknown = cli("user", "bind", "carol", "--role", "root", code=2).output
    assert "unknown role 'root'" in unknown
    assert "no user 'nobody'" in cli("user", "disable", "nobody", code=2).output

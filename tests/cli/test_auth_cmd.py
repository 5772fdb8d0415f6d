"""`cloudtap login | logout | whoami | token` against a real server with access control on."""

from __future__ import annotations

import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from auth_server import ADMIN, PASSWORD, add_admin, serve, settings_for
from typer.testing import CliRunner

from cloudtap.cli.main import app as cli_app
from cloudtap.cli.server_client import ServerClient, ServerError

runner = CliRunner()


@pytest.fixture()
def api(open_store: Callable[..., Any], tmp_path: Path) -> Iterator[tuple[str, Any]]:
    """(URL, app) of a server with one admin."""
    from cloudtap.server.api.app import create_app

    app = create_app(settings_for(tmp_path / "server"), open_store())
    add_admin(app)
    with serve(app) as url:
        yield url, app


@pytest.fixture()
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "password"
    path.write_text(PASSWORD + "\n")
    return path


def cli(*args: str, code: int = 0, input: str | None = None) -> Any:
    result = runner.invoke(cli_app, list(args), input=input)
    assert result.exit_code == code, result.output
    return result


def login(url: str, password_file: Path, *extra: str, user: str = ADMIN, code: int = 0) -> Any:
    return cli(
        "login", "--server", url, "--user", user, "--password-file", str(password_file), *extra, code=code
    )


def saved(credentials: Path) -> dict[str, Any]:
    return yaml.safe_load(credentials.read_text())  # type: ignore[no-any-return]


def test_login_saves_a_private_file_that_later_commands_use(
    api: tuple[str, Any], password_file: Path, _private_credentials: Path
) -> None:
    url, _ = api
    out = login(url, password_file, "--token-name", "laptop", "--days", "7").output
    doc = saved(_private_credentials)
    entry = doc["servers"][url]
    assert doc["default"] == url and entry["user"] == ADMIN and entry["token"].startswith("ct_")
    assert entry["token"] not in out and PASSWORD not in out
    assert f"as {ADMIN}" in out and "admin on all projects" in out and "expires" in out and "laptop" in out
    assert stat.S_IMODE(_private_credentials.stat().st_mode) == 0o600
    assert stat.S_IMODE(_private_credentials.parent.stat().st_mode) == 0o700
    # later commands: the saved token, and the saved server as default
    who = cli("whoami").output
    assert ADMIN in who and url in who and f"token id {entry['token_id']}" in who
    listed = cli("token", "list").output
    assert entry["token_id"] in listed and "laptop" in listed and "active" in listed
    # logging in again replaces the token and revokes the old one
    login(url, password_file)
    assert saved(_private_credentials)["servers"][url]["token_id"] != entry["token_id"]
    with pytest.raises(ServerError) as refused:
        ServerClient(url, entry["token"]).get_json("/api/v1/auth/me")
    assert refused.value.status == 401 and "revoked" in str(refused.value)


def test_prompts_for_user_and_password(api: tuple[str, Any], _private_credentials: Path) -> None:
    url, _ = api
    out = cli("login", "--server", url, input=f"{ADMIN}\n{PASSWORD}\n").output
    assert f"as {ADMIN}" in out and PASSWORD not in out
    assert saved(_private_credentials)["servers"][url]["user"] == ADMIN


def test_wrong_password_exits_non_zero_and_saves_nothing(
    api: tuple[str, Any], tmp_path: Path, _private_credentials: Path
) -> None:
    url, _ = api
    wrong = tmp_path / "wrong"
    wrong.write_text("not the password at all")
    out = login(url, wrong, code=1).output
    assert "login to" in out and "refused" in out and "wrong user name or password" in out
    assert not _private_credentials.exists()
    assert "not logged in" in cli("whoami", "--server", url, code=1).output


def test_without_a_login_commands_say_to_log_in(api: tuple[str, Any]) -> None:
    url, _ = api
    out = cli("whoami", "--server", url, code=1).output
    assert "not logged in" in out and f"cloudtap login --server {url}" in out
    bad = cli("whoami", "--server", url, "--token", "ct_nope_nope", code=1).output
    assert "not logged in or the token expired" in bad and "cloudtap login" in bad


def test_token_create_and_revoke(
    api: tuple[str, Any], password_file: Path, _private_credentials: Path
) -> None:
    url, _ = api
    login(url, password_file)
    made = cli("token", "create", "--name", "grafana", "--days", "1")
    token = made.stdout.strip().splitlines()[-1]
    assert token.startswith("ct_") and "shown only now" in made.output
    assert ADMIN in cli("whoami", "--token", token).output
    token_id = token.split("_")[1]
    assert "grafana" in cli("token", "list", "--all").output
    assert f"revoked token {token_id}" in cli("token", "revoke", token_id).output
    out = cli("whoami", "--token", token, code=1).output
    assert "not logged in or the token expired" in out and "revoked" in out and "cloudtap login" in out
    assert "revoked" in cli("token", "list").output
    # revoking the saved login's own token forgets it too
    own = saved(_private_credentials)["servers"][url]["token_id"]
    assert "removed from" in cli("token", "revoke", own).output
    assert url not in saved(_private_credentials)["servers"]


def test_logout_revokes_the_token_on_the_server(
    api: tuple[str, Any], password_file: Path, _private_credentials: Path
) -> None:
    url, _ = api
    login(url, password_file)
    token = saved(_private_credentials)["servers"][url]["token"]
    assert "logged out" in cli("logout").output
    assert saved(_private_credentials)["servers"] == {}
    with pytest.raises(ServerError) as refused:
        ServerClient(url, token).get_json("/api/v1/auth/me")
    assert refused.value.status == 401
    assert "nothing to do" in cli("logout", "--server", url).output


def test_login_over_https_saves_the_ca(
    open_store: Callable[..., Any], tmp_path: Path, password_file: Path, _private_credentials: Path
) -> None:
    pytest.importorskip("cryptography")
    from cloudtap.server.api.app import create_app
    from cloudtap.tls import CA_CERT, make_ca, make_certificate

    certs = tmp_path / "tls"
    make_ca(certs)
    cert = make_certificate(certs, certs, "server", ["127.0.0.1"])
    app = create_app(settings_for(tmp_path / "server"), open_store())
    add_admin(app)
    with serve(app, ssl_certfile=str(cert.cert), ssl_keyfile=str(cert.key)) as url:
        refused = login(url, password_file, code=1).output
        assert "cannot verify the TLS certificate" in refused and "--ca" in refused
        assert not _private_credentials.exists()
        login(url, password_file, "--ca", str(certs / CA_CERT))
        assert saved(_private_credentials)["servers"][url]["ca_file"] == str((certs / CA_CERT).resolve())
        assert ADMIN in cli("whoami").output  # CA and token from the saved login

"""The credentials file: where it is, what it holds, who may read it."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from cloudtap.cli.credentials import CredentialsFile, SavedLogin, credentials_path, server_key
from cloudtap.cli.errors import CliError


def test_path_precedence(tmp_path: Path) -> None:
    home = Path.home()
    assert credentials_path({}) == home / ".config" / "cloudtap" / "credentials.yaml"
    assert credentials_path({"XDG_CONFIG_HOME": str(tmp_path)}) == tmp_path / "cloudtap" / "credentials.yaml"
    chosen = {"XDG_CONFIG_HOME": str(tmp_path), "CLOUDTAP_CREDENTIALS": str(tmp_path / "c.yaml")}
    assert credentials_path(chosen) == tmp_path / "c.yaml"


def test_server_key_normalises() -> None:
    assert server_key("HTTPS://Cloudtap.Example:8470/") == "https://cloudtap.example:8470"
    assert server_key(" http://10.0.0.5:8470/prefix/ ") == "http://10.0.0.5:8470/prefix"


def test_save_get_remove_keeps_it_private(tmp_path: Path) -> None:
    path = tmp_path / "new" / "credentials.yaml"
    creds = CredentialsFile(path)
    assert creds.get("http://a:1") is None and creds.default_server() is None
    a = SavedLogin("http://a:1/", "ct_1_secret", "1", "alice", 1.5e9, "/ca.pem")
    b = SavedLogin("https://b:2", "ct_2_secret", "2", "bob", 2.5e9)
    creds.save(a)
    creds.save(b)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert creds.get("HTTP://A:1") == SavedLogin("http://a:1", "ct_1_secret", "1", "alice", 1.5e9, "/ca.pem")
    assert creds.default_server() == "https://b:2" and not creds.too_open()
    assert creds.remove("https://b:2") and not creds.remove("https://b:2")
    assert creds.default_server() is None and creds.get("http://a:1") is not None
    path.chmod(0o644)
    assert creds.too_open()
    creds.save(a)  # rewritten: private again
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not list(path.parent.glob(".*.tmp"))


def test_a_broken_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "credentials.yaml"
    path.write_text("servers: [unclosed")
    with pytest.raises(CliError, match="not valid YAML"):
        CredentialsFile(path).get("http://a:1")
    path.write_text("- a list\n")
    with pytest.raises(CliError, match="not a cloudtap credentials file"):
        CredentialsFile(path).get("http://a:1")

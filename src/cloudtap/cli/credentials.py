"""The credentials file written by `cloudtap login`: one saved API token per server, mode 0600.

Where: ``$CLOUDTAP_CREDENTIALS``, else ``$XDG_CONFIG_HOME/cloudtap/credentials.yaml``, else
``~/.config/cloudtap/credentials.yaml`` (its directory is made 0700). Shape::

    default: https://cloudtap.example:8470      # the last server logged in to
    servers:
      https://cloudtap.example:8470:
        token: ct_...                           # secret: never printed
        token_id: 1a2b3c4d5e6f
        user: alice
        expires_at: 1790000000.0                # epoch seconds
        ca_file: /etc/cloudtap/tls/ca.pem       # optional
"""

from __future__ import annotations

import os
import stat
import urllib.parse
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from cloudtap.cli.errors import CliError

ENV_PATH = "CLOUDTAP_CREDENTIALS"


@dataclass(frozen=True)
class SavedLogin:
    """The token `cloudtap login` saved for one server."""

    server: str
    token: str
    token_id: str
    user: str
    expires_at: float
    ca_file: str | None = None


def credentials_path(env: Mapping[str, str] | None = None) -> Path:
    """The credentials file: ``$CLOUDTAP_CREDENTIALS``, ``$XDG_CONFIG_HOME/cloudtap/...`` or ``~/.config/...``."""
    env = os.environ if env is None else env
    if env.get(ENV_PATH):
        return Path(env[ENV_PATH]).expanduser()
    base = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else Path.home() / ".config"
    return base / "cloudtap" / "credentials.yaml"


def server_key(url: str) -> str:
    """The form a server URL is saved under: scheme and host lower case, no trailing slash."""
    parts = urllib.parse.urlsplit(url.strip())
    return urllib.parse.urlunsplit(
        (parts.scheme.lower(), parts.netloc.lower(), parts.path.rstrip("/"), "", "")
    )


class CredentialsFile:
    """Reads and rewrites the credentials file (atomically, never wider than 0600)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or credentials_path()
        #: the directory is cloudtap's own (not a path the user chose): it is kept 0700
        self._own_directory = path is None and not os.environ.get(ENV_PATH)

    def _load(self) -> dict[str, Any]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise CliError(f"cannot read the credentials file {self.path}: {exc.strerror}") from exc
        try:
            doc = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise CliError(f"the credentials file {self.path} is not valid YAML: {exc}") from exc
        if not isinstance(doc, dict) or not isinstance(doc.get("servers", {}), dict):
            raise CliError(f"the credentials file {self.path} is not a cloudtap credentials file")
        return doc

    def get(self, server: str) -> SavedLogin | None:
        """The login saved for ``server``, if any."""
        entry = self._load().get("servers", {}).get(server_key(server))
        if not isinstance(entry, dict) or not entry.get("token"):
            return None
        return SavedLogin(server=server_key(server), token=str(entry["token"]), token_id=str(entry.get("token_id", "")),
                          user=str(entry.get("user", "")), expires_at=float(entry.get("expires_at") or 0),
                          ca_file=entry.get("ca_file"))  # fmt: skip

    def default_server(self) -> str | None:
        """The server of the last login still saved."""
        doc = self._load()
        default = doc.get("default")
        return default if isinstance(default, str) and default in doc.get("servers", {}) else None

    def save(self, login: SavedLogin) -> None:
        """Save (or replace) the login for its server and make it the default server."""
        doc = self._load()
        entry = {k: v for k, v in asdict(login).items() if k != "server" and v is not None}
        doc.setdefault("servers", {})[server_key(login.server)] = entry
        doc["default"] = server_key(login.server)
        self._write(doc)

    def remove(self, server: str) -> bool:
        """Forget the login for ``server``; False when there was none."""
        doc = self._load()
        if doc.get("servers", {}).pop(server_key(server), None) is None:
            return False
        if doc.get("default") == server_key(server):
            doc.pop("default")
        self._write(doc)
        return True

    def too_open(self) -> bool:
        """True when others than the owner may read the file."""
        try:
            return bool(self.path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO))
        except OSError:
            return False

    def _write(self, doc: dict[str, Any]) -> None:
        directory = self.path.parent
        try:
            if not directory.exists():
                directory.mkdir(mode=0o700, parents=True)
            elif self._own_directory:
                directory.chmod(0o700)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    os.fchmod(f.fileno(), 0o600)
                    yaml.safe_dump(doc, f, sort_keys=False)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise CliError(f"cannot write the credentials file {self.path}: {exc.strerror or exc}") from exc

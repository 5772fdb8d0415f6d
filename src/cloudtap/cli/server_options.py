"""The options of every command that talks to a server (``--server``, ``--token``, ``--ca``) and how they resolve.

- server: ``--server`` / ``CLOUDTAP_SERVER``, else the server of the last ``cloudtap login``, else
  http://127.0.0.1:8470;
- token: ``--token`` / ``CLOUDTAP_TOKEN``, else the token ``cloudtap login`` saved for that server;
- CA: ``--ca`` / ``CLOUDTAP_CA``, else the CA file saved with that login, else the system trust store.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from cloudtap.cli.credentials import CredentialsFile, SavedLogin
from cloudtap.cli.server_client import DEFAULT_SERVER, UNREACHABLE_HINT, ServerClient

ServerOpt = Annotated[
    str | None,
    typer.Option(
        "--server",
        "-s",
        envvar="CLOUDTAP_SERVER",
        help=f"server URL (default: the last `cloudtap login`, else {DEFAULT_SERVER})",
    ),
]
TokenOpt = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="CLOUDTAP_TOKEN",
        show_default=False,
        help="API token (default: the one `cloudtap login` saved for the server)",
    ),
]
CaOpt = Annotated[
    Path | None,
    typer.Option(
        "--ca",
        envvar="CLOUDTAP_CA",
        help="CA file that signed the server's TLS certificate (default: saved by login, else the system's)",
    ),
]


@dataclass(frozen=True)
class Remote:
    """A server as the user named it (all optional), resolved against the environment and saved logins."""

    server: str | None = None
    token: str | None = None
    ca: Path | None = None

    def url(self, credentials: CredentialsFile | None = None) -> str:
        """The server URL: given, else the last login's, else :data:`DEFAULT_SERVER`."""
        if self.server:
            return self.server.rstrip("/")
        return (credentials or CredentialsFile()).default_server() or DEFAULT_SERVER

    def saved(self, credentials: CredentialsFile | None = None) -> SavedLogin | None:
        """The login saved for this server, if any."""
        credentials = credentials or CredentialsFile()
        saved = credentials.get(self.url(credentials))
        if saved is not None and credentials.too_open():
            Console(stderr=True, soft_wrap=True).print(f"[yellow]warning:[/] {credentials.path} is readable by others: "
                                       f"chmod 600 {credentials.path}", highlight=False)  # fmt: skip
        return saved

    def client(
        self, timeout_s: float = 60.0, hint: str = UNREACHABLE_HINT, anonymous: bool = False
    ) -> ServerClient:
        """A client with the token and CA resolved (``anonymous``: no token, e.g. to log in)."""
        credentials = CredentialsFile()
        url = self.url(credentials)
        saved = None if self.token and self.ca else self.saved(credentials)
        token = None if anonymous else self.token or (saved.token if saved else None)
        ca = self.ca or (Path(saved.ca_file) if saved and saved.ca_file else None)
        client = ServerClient(url, token, ca, timeout_s, hint)
        if client.token_in_clear:
            Console(stderr=True, soft_wrap=True).print(f"[yellow]warning:[/] sending your API token to {url} over plain HTTP: "
                                       "serve the API over HTTPS", highlight=False)  # fmt: skip
        return client

"""A real API for CLI tests: ``create_app`` on loopback (uvicorn in a thread) with access control on.

``settings_for(tmp)`` keeps the access database, audit log and controller state in ``tmp``;
``serve(app)`` yields the URL; ``token_of(grant(app, "viewer"))`` is a token to pass as ``--token``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cloudtap.server.access.principal import RoleBinding
from cloudtap.server.settings import ServerSettings
from uvicorn_thread import serve_in_thread

ADMIN = "admin"
PASSWORD = "correct horse battery staple"


def settings_for(tmp: Path, **sections: dict[str, Any]) -> ServerSettings:
    """Settings whose access database, audit log and controller state live in ``tmp``."""
    doc: dict[str, Any] = {
        "auth": {"db_path": str(tmp / "access.sqlite"), "audit_log": str(tmp / "audit.jsonl")},
        "controller": {"db_path": str(tmp / "ctl.sqlite")},
    }
    for name, values in sections.items():
        doc[name] = {**doc.get(name, {}), **values}
    return ServerSettings.model_validate(doc)


def add_admin(app: Any, name: str = ADMIN, password: str = PASSWORD) -> None:
    """The first admin (``cloudtap server run`` creates it at first start)."""
    app.state.access.add_user(name, password, [RoleBinding("admin")])


def token_of(headers: dict[str, str]) -> str:
    """The token in an ``Authorization: Bearer`` header dict (``access_helpers.grant``)."""
    return headers["Authorization"].split(" ", 1)[1]


@contextmanager
def serve(app: Any, **ssl: Any) -> Iterator[str]:
    """``app`` on 127.0.0.1, a free port (``ssl_certfile``/``ssl_keyfile``: HTTPS); yields its URL."""
    with serve_in_thread(app, **ssl) as url:
        yield url

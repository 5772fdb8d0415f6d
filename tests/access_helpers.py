"""Credentials for tests that call the API: a user with a role (optionally on projects) and its token.

Usage: ``from access_helpers import grant``; ``headers = grant(app, "viewer", ["shop"])`` then pass
``headers=headers`` to a TestClient call (tests/ is on sys.path, see tests/conftest.py). Names are
unique, so tests sharing one access database never collide.
"""

from __future__ import annotations

import itertools
import uuid
from typing import Any

from cloudtap.server.access.principal import RoleBinding

_COUNTER = itertools.count()
PASSWORD = "correct horse battery staple"


def grant(app: Any, role: str = "admin", projects: list[str] | None = None, name: str | None = None) -> dict[str, str]:
    """A new user with ``role`` (on ``projects``, or all) and the ``Authorization`` header of a new token."""
    user = name or f"{role}-{next(_COUNTER)}-{uuid.uuid4().hex[:6]}"
    binding = RoleBinding(role, frozenset(projects) if projects is not None else None)
    app.state.access.add_user(user, PASSWORD, [binding])
    token = app.state.access.issue_token(user, "test").token
    return {"Authorization": f"Bearer {token}"}


def admin_client(app: Any, **kwargs: Any) -> Any:
    """A TestClient whose every request carries an admin token."""
    from fastapi.testclient import TestClient

    client = TestClient(app, **kwargs)
    client.headers.update(grant(app, "admin"))
    return client

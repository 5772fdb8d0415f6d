"""The first admin: created at the server's first start, so a fresh install is never open."""

from __future__ import annotations

from cloudtap.errors import CloudtapError
from cloudtap.server.access.credentials import new_secret
from cloudtap.server.access.principal import RoleBinding
from cloudtap.server.access.service import AccessService, AuthError
from cloudtap.server.settings import AuthSection


def ensure_admin(access: AccessService, auth: AuthSection) -> str | None:
    """Create ``auth.admin_user`` when there is no user yet.

    Its password is read from ``auth.admin_password_file`` when set; otherwise a random one is made
    and returned, for the caller to show once (it is stored only as an argon2id hash).

    Returns:
        The generated password, or None (a user existed, or the password came from the file).
    Raises:
        CloudtapError: the password file is unreadable or its password too weak.
    """
    if access.has_users():
        return None
    generated = None
    if auth.admin_password_file is not None:
        try:
            password = auth.admin_password_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise CloudtapError(f"cannot read auth.admin_password_file {auth.admin_password_file}: {exc.strerror}") from exc
    else:
        password = generated = new_secret(15)
    try:
        access.add_user(auth.admin_user, password, [RoleBinding("admin")])
    except ValueError as exc:
        raise CloudtapError(f"first admin {auth.admin_user!r}: {exc}") from exc
    except AuthError as exc:  # another server process sharing the access state created it first
        if exc.status != 409:
            raise
        return None
    return generated

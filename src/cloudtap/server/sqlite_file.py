"""Open a server-side SQLite state file (access control, controller): private, WAL, schema applied."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def open_sqlite(path: str | Path, schema: str) -> sqlite3.Connection:
    """A connection to ``path`` (``":memory:"`` for tests) with ``schema`` applied.

    The file is created 0600 with its directory, and made owner-only if it already exists with wider
    permissions (these files hold password hashes, token digests and agent credentials). WAL journal,
    autocommit (``isolation_level=None``: callers open their own transactions), rows as ``sqlite3.Row``;
    the connection may be used from any thread (callers serialise with their own lock).
    """
    text = str(path)
    if text != ":memory:":
        p = Path(text)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.touch(mode=0o600, exist_ok=True)
        _owner_only(p)
    conn = sqlite3.connect(text, check_same_thread=False, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript(schema)
    return conn


def _owner_only(path: Path) -> None:
    """Make the file readable by its owner only; best effort (e.g. a file owned by someone else)."""
    try:
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
    except OSError:
        pass

"""SharedCommandQueue: commands in PostgreSQL's ``commands`` table, deliverable through any server process.

Queued through one process, a command wakes the agent's long-poll on another: the insert trigger announces
``commands:<agent id>`` (``NOTIFY``), the process holding the long-poll takes it. Taking is one
``UPDATE ... FOR UPDATE SKIP LOCKED`` so a command is delivered once, whichever processes poll. A missed
notification costs at most :attr:`SharedCommandQueue.poll_s` (the waiters also poll).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from typing import Any

from cloudtap.server.controller.commands import ACTIONS, Command, _Waiter
from cloudtap.server.controller.db import StateDB

COLUMNS = "id, agent_id, action, issued_at, delivered_at, done_at, ok, detail"


def _command(row: dict[str, Any]) -> Command:
    return Command(**{k: row[k] for k in COLUMNS.split(", ")})


class SharedCommandQueue:
    """The :class:`~.commands.CommandQueue` interface over a shared :class:`~.db_postgres.PostgresDB`.

    Args:
        db: the shared state (its ``commands`` table and notifications).
        ttl_s: a command not delivered within this is dropped.
        keep_done: about this many finished commands are kept (for ``GET /commands/{id}`` and the metrics).
        poll_s: the longest a long-poll waits between two looks at the table.
    """

    def __init__(self, db: StateDB, ttl_s: float = 300.0, keep_done: int = 1000, poll_s: float = 2.0) -> None:
        self.db = db
        self.ttl_s, self.keep_done, self.poll_s = ttl_s, keep_done, poll_s
        self._lock = threading.Lock()
        self._waiters: dict[str, list[_Waiter]] = {}
        self._puts = itertools.count(1)
        db.subscribe("commands", self._wake)

    def put(self, agent_id: str, action: str) -> Command:
        """Queue ``action`` for ``agent_id``; its long-poll wakes on whichever process holds it.

        Raises:
            ValueError: unknown action.
        """
        if action not in ACTIONS:
            raise ValueError(f"unknown command {action!r}; expected one of {list(ACTIONS)}")
        rows = self.db.rows(f"INSERT INTO commands (agent_id, action, issued_at) VALUES (?, ?, ?) RETURNING {COLUMNS}",
                            (agent_id, action, time.time()))  # fmt: skip
        if next(self._puts) % 100 == 0:
            self._prune()
        return _command(rows[0])

    def take(self, agent_id: str) -> list[Command]:
        """Pending, unexpired commands of ``agent_id`` (marked delivered), oldest first."""
        now = time.time()
        rows = self.db.rows(
            f"""UPDATE commands SET delivered_at = ? WHERE id IN (
                  SELECT id FROM commands WHERE agent_id = ? AND delivered_at IS NULL AND issued_at > ?
                  ORDER BY id FOR UPDATE SKIP LOCKED)
                RETURNING {COLUMNS}""",
            (now, agent_id, now - self.ttl_s),
        )
        return sorted((_command(r) for r in rows), key=lambda c: c.id)

    async def wait(self, agent_id: str, timeout_s: float) -> list[Command]:
        """Pending commands now, or as soon as one is queued (through any process), or ``[]`` after ``timeout_s``."""
        if timeout_s <= 0:
            return await asyncio.to_thread(self.take, agent_id)
        loop = asyncio.get_running_loop()
        waiter = _Waiter(loop)
        with self._lock:
            self._waiters.setdefault(agent_id, []).append(waiter)
        deadline = loop.time() + timeout_s
        try:
            while True:
                waiter.event.clear()  # before looking: a notification from now on is not lost
                cmds = await asyncio.to_thread(self.take, agent_id)
                left = deadline - loop.time()
                if cmds or left <= 0:
                    return cmds
                try:
                    await asyncio.wait_for(waiter.event.wait(), min(left, self.poll_s))
                except TimeoutError:
                    pass
        finally:
            with self._lock:
                waiters = self._waiters.get(agent_id, [])
                if waiter in waiters:
                    waiters.remove(waiter)
                if not waiters:
                    self._waiters.pop(agent_id, None)

    def _wake(self, agent_id: str) -> None:
        """A command was queued for ``agent_id`` ("" after a reconnection: wake everybody to look)."""
        with self._lock:
            waiters = [w for a, ws in self._waiters.items() if not agent_id or a == agent_id for w in ws]
        for w in waiters:
            w.loop.call_soon_threadsafe(w.event.set)

    def done(self, command_id: int, ok: bool, detail: str = "") -> Command | None:
        """Record an agent's result for a command."""
        rows = self.db.rows(f"UPDATE commands SET done_at = ?, ok = ?, detail = ? WHERE id = ? RETURNING {COLUMNS}",
                            (time.time(), ok, detail, command_id))  # fmt: skip
        return _command(rows[0]) if rows else None

    def get(self, command_id: int) -> Command | None:
        rows = self.db.rows(f"SELECT {COLUMNS} FROM commands WHERE id = ?", (command_id,))
        return _command(rows[0]) if rows else None

    def snapshot(self) -> list[Command]:
        """The most recent commands (pending and done, at most twice ``keep_done``), oldest first (metrics)."""
        rows = self.db.rows(f"SELECT {COLUMNS} FROM commands ORDER BY id DESC LIMIT ?", (self.keep_done * 2,))
        return [_command(r) for r in reversed(rows)]

    def _prune(self) -> None:
        """Drop finished or expired commands older than the last ``keep_done``."""
        self.db.execute(
            """DELETE FROM commands WHERE id <= (SELECT max(id) FROM commands) - ?
                 AND (done_at IS NOT NULL OR issued_at < ?)""",
            (self.keep_done, time.time() - self.ttl_s),
        )

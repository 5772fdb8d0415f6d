"""Commands to agents (capture start/stop...), delivered by long-poll as soon as they are queued.

:class:`CommandQueue` keeps them in this process (the SQLite default); with a shared database,
:func:`command_queue` gives :class:`~.commands_shared.SharedCommandQueue` (any server process delivers them).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cloudtap.server.controller.commands_shared import SharedCommandQueue
    from cloudtap.server.controller.db import StateDB

ACTIONS = ("start", "stop")


@dataclass
class Command:
    """One command for one agent."""

    id: int
    agent_id: str
    action: str
    issued_at: float
    delivered_at: float | None = None
    done_at: float | None = None
    ok: bool | None = None
    detail: str = ""

    def public(self) -> dict[str, object]:
        return {"id": self.id, "action": self.action, "issued_at": self.issued_at}


@dataclass
class _Waiter:
    loop: asyncio.AbstractEventLoop
    event: asyncio.Event = field(default_factory=asyncio.Event)


class CommandQueue:
    """Per-agent queues; :meth:`wait` answers the moment :meth:`put` queues something (any thread)."""

    def __init__(self, ttl_s: float = 300.0, keep_done: int = 1000) -> None:
        self.ttl_s = ttl_s
        self.keep_done = keep_done
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._pending: dict[str, list[Command]] = {}
        self._all: dict[int, Command] = {}
        self._waiters: dict[str, list[_Waiter]] = {}

    def put(self, agent_id: str, action: str) -> Command:
        """Queue ``action`` for ``agent_id`` and wake its long-poll.

        Raises:
            ValueError: unknown action.
        """
        if action not in ACTIONS:
            raise ValueError(f"unknown command {action!r}; expected one of {list(ACTIONS)}")
        cmd = Command(next(self._ids), agent_id, action, time.time())
        with self._lock:
            self._pending.setdefault(agent_id, []).append(cmd)
            self._all[cmd.id] = cmd
            waiters = self._waiters.pop(agent_id, [])
            self._prune()
        for w in waiters:
            w.loop.call_soon_threadsafe(w.event.set)
        return cmd

    def take(self, agent_id: str) -> list[Command]:
        """Pending commands of ``agent_id`` (marked delivered), oldest first; expired ones are dropped."""
        with self._lock:
            return self._pop(agent_id)

    async def wait(self, agent_id: str, timeout_s: float) -> list[Command]:
        """Pending commands now, or as soon as one is queued, or ``[]`` after ``timeout_s``."""
        cmds = self.take(agent_id)
        if cmds or timeout_s <= 0:
            return cmds
        waiter = _Waiter(asyncio.get_running_loop())
        with self._lock:
            if self._pending.get(agent_id):
                return self._pop(agent_id)
            self._waiters.setdefault(agent_id, []).append(waiter)
        try:
            await asyncio.wait_for(waiter.event.wait(), timeout_s)
        except TimeoutError:
            pass
        finally:
            with self._lock:
                lst = self._waiters.get(agent_id, [])
                if waiter in lst:
                    lst.remove(waiter)
        return self.take(agent_id)

    def _pop(self, agent_id: str) -> list[Command]:
        """Pop pending, unexpired commands (the lock is held)."""
        now = time.time()
        cmds = [c for c in self._pending.pop(agent_id, []) if now - c.issued_at < self.ttl_s]
        for c in cmds:
            c.delivered_at = now
        return cmds

    def done(self, command_id: int, ok: bool, detail: str = "") -> Command | None:
        """Record an agent's result for a command."""
        cmd = self._all.get(command_id)
        if cmd is not None:
            cmd.done_at, cmd.ok, cmd.detail = time.time(), ok, detail
        return cmd

    def get(self, command_id: int) -> Command | None:
        return self._all.get(command_id)

    def snapshot(self) -> list[Command]:
        """Every command still kept (pending and recently done), oldest first (metrics read it)."""
        with self._lock:
            return [self._all[cid] for cid in sorted(self._all)]

    def _prune(self) -> None:
        if len(self._all) > self.keep_done * 2:
            for cid in sorted(self._all)[: len(self._all) - self.keep_done]:
                cmd = self._all[cid]
                if cmd.done_at is not None or time.time() - cmd.issued_at > self.ttl_s:
                    del self._all[cid]


def command_queue(db: StateDB) -> CommandQueue | SharedCommandQueue:
    """The queue for ``db``: in the shared database when other processes share it, else in memory."""
    if db.shared:
        from cloudtap.server.controller.commands_shared import SharedCommandQueue

        return SharedCommandQueue(db)
    return CommandQueue()

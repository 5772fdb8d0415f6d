"""Registry: which agents exist, their stable ids, groups and where they run."""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any

from cloudtap.server.controller.auth import Refusal
from cloudtap.server.controller.db import StateDB

_COLUMNS = ("id, name, hostname, machine_id, address, group_name, version, mode, heartbeat_s, registered_at, "
            "last_seen, config_version, control_url")  # fmt: skip


def agent_id_for(hostname: str, machine_id: str) -> str:
    """Stable id of the agent on ``hostname`` with ``machine_id`` (same host -> same id across restarts)."""
    digest = hashlib.sha256(f"{hostname}\0{machine_id}".encode()).hexdigest()[:16]
    return f"ag-{digest}"


@dataclass(frozen=True)
class AgentRecord:
    """One registered agent."""

    id: str
    name: str  #: the agent's own name (``agent_id`` in its records)
    hostname: str
    machine_id: str
    address: str = ""
    group: str = "default"
    version: str = ""
    mode: str = ""
    heartbeat_s: float = 10.0
    registered_at: float = 0.0
    last_seen: float = 0.0
    config_version: int = 0
    control_url: str = ""  #: the last reported control URL that passed the checks (``control_url``)
    extra: dict[str, Any] = field(default_factory=dict)


class Registry:
    """Agents in memory, written through to the database (``last_seen`` is written in batches by :meth:`flush`);
    with a shared database, reloaded whenever another process changes them."""

    def __init__(self, db: StateDB) -> None:
        self.db = db
        self._lock = threading.Lock()
        self._reloading = threading.Lock()
        self._agents: dict[str, AgentRecord] = {}
        self._dirty_seen: set[str] = set()
        self._touched: set[str] = set()  #: written here since the running reload began: memory wins
        db.subscribe("agents", self.reload)
        db.subscribe("agents_seen", self._reload_seen)
        self.reload()

    def reload(self, _detail: str = "") -> None:
        """Read every agent again (a ``last_seen`` newer in memory, not yet flushed, is kept)."""
        with self._reloading:
            with self._lock:
                self._touched = set()
            rows = self.db.rows(f"SELECT {_COLUMNS} FROM agents")
            with self._lock:
                known = self._agents
                fresh = {r["id"]: _record(r, known.get(r["id"])) for r in rows}
                for agent_id in self._touched:  # its write's own notification reloads it again
                    if agent_id in known:
                        fresh[agent_id] = known[agent_id]
                    else:
                        fresh.pop(agent_id, None)
                self._agents = fresh

    def _reload_seen(self, _detail: str = "") -> None:
        """Follow the ``last_seen`` other processes flushed."""
        rows = self.db.rows("SELECT id, last_seen FROM agents")
        with self._lock:
            for r in rows:
                rec = self._agents.get(r["id"])
                if rec is not None and r["last_seen"] > rec.last_seen:
                    self._agents[r["id"]] = replace(rec, last_seen=r["last_seen"])

    def register(
        self,
        name: str,
        hostname: str,
        machine_id: str,
        address: str = "",
        group: str = "default",
        version: str = "",
        mode: str = "",
        heartbeat_s: float = 10.0,
    ) -> AgentRecord:
        """Register (or re-register) an agent; returns its record with the id the server assigned.

        Raises:
            Refusal: 400 when the host name or machine id is missing.
        """
        if not hostname or not machine_id:
            raise Refusal(400, "registration needs a host name and a machine id (/etc/machine-id)")
        agent_id = agent_id_for(hostname, machine_id)
        now = time.time()
        with self._lock:
            old = self._agents.get(agent_id)
            record = AgentRecord(
                id=agent_id, name=name or hostname, hostname=hostname, machine_id=machine_id, address=address,
                group=group or "default", version=version, mode=mode, heartbeat_s=heartbeat_s,
                registered_at=old.registered_at if old else now, last_seen=now,
                config_version=old.config_version if old else 0, control_url=old.control_url if old else "",
            )  # fmt: skip
            self._agents[agent_id] = record
            self._touched.add(agent_id)
        self.db.execute(
            """INSERT INTO agents (id, name, hostname, machine_id, address, group_name, version, mode, heartbeat_s,
                                   registered_at, last_seen, config_version)
               VALUES (?,?,?,?,?,?,?,?,?,?,?,?)
               ON CONFLICT(id) DO UPDATE SET name=excluded.name, hostname=excluded.hostname, address=excluded.address,
                 group_name=excluded.group_name, version=excluded.version, mode=excluded.mode,
                 heartbeat_s=excluded.heartbeat_s, last_seen=excluded.last_seen""",
            (record.id, record.name, record.hostname, record.machine_id, record.address, record.group, record.version,
             record.mode, record.heartbeat_s, record.registered_at, record.last_seen, record.config_version),
        )  # fmt: skip
        return record

    def get(self, agent_id: str) -> AgentRecord:
        """The agent with ``agent_id``.

        Raises:
            Refusal: 404 when unknown (the agent registers again).
        """
        record = self._agents.get(agent_id)
        if record is None:
            raise Refusal(404, f"unknown agent id {agent_id!r}: register first (POST /api/v1/agents/register)")
        return record

    def named(self, name: str) -> list[AgentRecord]:
        """Agents whose name (the ``agent_id`` in their records) is ``name``."""
        with self._lock:
            return [a for a in self._agents.values() if a.name == name]

    def find(self, key: str) -> AgentRecord | None:
        """An agent by id, name or host name."""
        if key in self._agents:
            return self._agents[key]
        return next((a for a in self.all() if key in (a.name, a.hostname)), None)

    def all(self) -> list[AgentRecord]:
        """Every agent, by name."""
        with self._lock:
            return sorted(self._agents.values(), key=lambda a: (a.name, a.id))

    def seen(self, agent_id: str, when: float) -> None:
        """Note a heartbeat (persisted by :meth:`flush`)."""
        with self._lock:
            rec = self._agents.get(agent_id)
            if rec is not None:
                self._agents[agent_id] = replace(rec, last_seen=when)
                self._dirty_seen.add(agent_id)

    def update(self, agent_id: str, **changes: Any) -> AgentRecord:
        """Change fields (``group``, ``config_version``...) and persist them."""
        columns = {"group": "group_name"}
        known = {k: v for k, v in changes.items() if k in AgentRecord.__dataclass_fields__}
        with self._lock:
            rec = replace(self.get(agent_id), **known)
            self._agents[agent_id] = rec
            self._touched.add(agent_id)
        sets = ", ".join(f"{columns.get(k, k)} = ?" for k in changes)
        self.db.execute(f"UPDATE agents SET {sets} WHERE id = ?", (*changes.values(), agent_id))
        return rec

    def remove(self, agent_id: str) -> None:
        """Forget an agent (decommissioned)."""
        with self._lock:
            self._agents.pop(agent_id, None)
            self._touched.add(agent_id)
        self.db.execute("DELETE FROM agents WHERE id = ?", (agent_id,))

    def flush(self) -> None:
        """Write pending ``last_seen`` values."""
        with self._lock:
            dirty, self._dirty_seen = self._dirty_seen, set()
            values = [(self._agents[a].last_seen, a) for a in dirty if a in self._agents]
        if values:
            with self.db.transaction() as conn:
                conn.executemany("UPDATE agents SET last_seen = ? WHERE id = ?", values)


def _record(row: dict[str, Any], known: AgentRecord | None) -> AgentRecord:
    """An agent's row as a record; ``known``'s later ``last_seen`` wins (heartbeats not flushed yet)."""
    return AgentRecord(
        id=row["id"], name=row["name"], hostname=row["hostname"], machine_id=row["machine_id"],
        address=row["address"], group=row["group_name"], version=row["version"], mode=row["mode"],
        heartbeat_s=row["heartbeat_s"], registered_at=row["registered_at"],
        last_seen=max(row["last_seen"], known.last_seen if known is not None else 0.0),
        config_version=row["config_version"], control_url=row["control_url"],
    )  # fmt: skip

"""Agent identities: the per-agent credential (agent -> server) and control key (server -> agent).

Registration issues both; re-registration rotates both. The credential reads ``cta_<agent id>_<secret>``:
the id finds the agent, the secret's SHA-256 is compared in constant time with the stored digest (the
secret itself is never stored). The control key is kept as is, because the server must send it to the
agent's control endpoint (PCAP retrieval); it never appears in an answer other than the registration's,
in a log or in an error.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from cloudtap.server.access.credentials import digest, new_secret, same
from cloudtap.server.controller.auth import Refusal
from cloudtap.server.controller.db import StateDB

CREDENTIAL_PREFIX = "cta_"


@dataclass(frozen=True)
class Issued:
    """What a registration hands the agent (shown once)."""

    credential: str
    control_key: str


@dataclass(frozen=True)
class _Stored:
    digest: str
    control_key: str
    at: float


def credential_agent(token: str) -> str | None:
    """The agent id a credential claims (``cta_<id>_<secret>``), or None when it is not one of ours."""
    if not token.startswith(CREDENTIAL_PREFIX):
        return None
    agent_id, sep, secret = token[len(CREDENTIAL_PREFIX) :].partition("_")
    return agent_id if sep and agent_id and secret else None


class AgentIdentities:
    """Credential digests and control keys of the registered agents, in memory and in the ``agents`` table."""

    def __init__(self, db: StateDB) -> None:
        self.db = db
        self._lock = threading.Lock()
        self._stored: dict[str, _Stored] = {}
        db.subscribe("agents", self.reload)  # another server process registered an agent
        self.reload()

    def reload(self, _detail: str = "") -> None:
        """Read every agent's credential digest and control key again."""
        with self._lock:  # held by :meth:`issue` too: a reload never undoes a rotation of this process
            rows = self.db.rows("SELECT id, credential_digest, control_key, credential_at FROM agents")
            self._stored = {r["id"]: _Stored(r["credential_digest"], r["control_key"], r["credential_at"])
                            for r in rows if r["credential_digest"]}  # fmt: skip

    def issue(self, agent_id: str) -> Issued:
        """New credential and control key for ``agent_id`` (the previous ones stop working now)."""
        secret, key, now = new_secret(), new_secret(), time.time()
        stored = _Stored(digest(secret), key, now)
        with self._lock:
            self._stored[agent_id] = stored
            self.db.execute(
                "UPDATE agents SET credential_digest = ?, control_key = ?, credential_at = ? WHERE id = ?",
                (stored.digest, key, now, agent_id),
            )
        return Issued(f"{CREDENTIAL_PREFIX}{agent_id}_{secret}", key)

    def has_credential(self, agent_id: str) -> bool:
        """True once a credential was issued to ``agent_id``."""
        return agent_id in self._stored

    def holds(self, agent_id: str, token: str | None) -> bool:
        """True when ``token`` is ``agent_id``'s current credential."""
        return bool(token) and self._check(token) == agent_id  # type: ignore[arg-type]

    def _check(self, token: str) -> str | None:
        claimed = credential_agent(token)
        stored = self._stored.get(claimed) if claimed else None
        if claimed is None or stored is None:
            return None
        secret = token[len(CREDENTIAL_PREFIX) + len(claimed) + 1 :]
        return claimed if same(digest(secret), stored.digest) else None

    def agent_of(self, token: str | None) -> str:
        """The agent id behind a credential.

        Raises:
            Refusal: 401 when it is missing, not an agent credential, unknown or replaced (the agent registers again).
        """
        if not token:
            raise Refusal(401, "missing agent credential: send 'Authorization: Bearer <credential>' (issued at "
                               "registration)")  # fmt: skip
        claimed = credential_agent(token)
        if claimed is None:
            raise Refusal(401, "not an agent credential (a bootstrap token only registers: POST "
                               "/api/v1/agents/register)")  # fmt: skip
        agent_id = self._check(token)
        if agent_id is None:
            raise Refusal(401, f"unknown or replaced credential for agent {claimed!r}: register again")
        return agent_id

    def control_key(self, agent_id: str) -> str | None:
        """The key ``agent_id``'s control endpoint requires (None before its first registration)."""
        stored = self._stored.get(agent_id)
        return stored.control_key if stored is not None and stored.control_key else None

    def forget(self, agent_id: str) -> None:
        """Drop an agent's secrets from memory (its row is deleted by the registry)."""
        with self._lock:
            self._stored.pop(agent_id, None)

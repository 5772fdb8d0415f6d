"""The agent's own credential and control key, issued by the controller at registration, kept in a 0600 file.

``controller.credential_file`` (JSON) holds what the last registration answered: the server it came from,
the agent id it assigned, the host it was issued for, the ``credential`` (sent as ``Authorization:
Bearer`` on every controller call and every shipped batch) and the ``control_key`` (required from
whoever calls the agent's control endpoint over TCP). A file issued by another server, or for another
host, is ignored. The copy in memory is authoritative; the file lets a restarted agent present its
credential when it registers again, so the bootstrap token may be removed from the host afterwards.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Issued:
    """One registration's secrets and whom they were issued to."""

    server: str
    agent_id: str
    hostname: str
    machine_id: str
    credential: str
    control_key: str


class CredentialStore:
    """The current :class:`Issued` of this agent at ``server`` (thread-safe).

    Args:
        path: the state file.
        server: the controller URL.
        hostname: the host name the agent registers with.
        machine_id: the machine id it registers with.
    """

    def __init__(self, path: Path, server: str, hostname: str, machine_id: str) -> None:
        self.path = Path(path)
        self.server = server.rstrip("/")
        self.hostname = hostname
        self.machine_id = machine_id
        self._lock = threading.Lock()
        self._issued = self._load()

    @property
    def issued(self) -> Issued | None:
        return self._issued

    def credential(self) -> str | None:
        """The credential to send (None before the first registration)."""
        issued = self._issued
        return issued.credential if issued is not None else None

    def control_key(self) -> str | None:
        """The key the control endpoint requires (None before the first registration)."""
        issued = self._issued
        return issued.control_key if issued is not None else None

    def save(self, answer: dict[str, Any]) -> Issued:
        """Keep what a registration answered (memory now; the file best effort)."""
        issued = Issued(self.server, str(answer["agent_id"]), self.hostname, self.machine_id,
                        str(answer["credential"]), str(answer["control_key"]))  # fmt: skip
        with self._lock:
            self._issued = issued
            self._write(asdict(issued))
        return issued

    def clear(self, credential: str | None) -> None:
        """Forget ``credential`` when it is still the current one (the server no longer takes it)."""
        with self._lock:
            if self._issued is None or self._issued.credential != credential:
                return
            self._issued = None
            try:
                self.path.unlink(missing_ok=True)
            except OSError as exc:
                log.warning("controller: cannot remove %s: %s", self.path, exc.strerror or exc)

    def _load(self) -> Issued | None:
        try:
            mode = self.path.stat().st_mode
            doc = json.loads(self.path.read_text(encoding="utf-8"))
            issued = Issued(**{k: str(doc[k]) for k in Issued.__dataclass_fields__})
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("controller: ignoring the credential file %s: %s", self.path, exc)
            return None
        if (issued.server, issued.hostname, issued.machine_id) != (self.server, self.hostname, self.machine_id):
            log.info("controller: %s was issued by another server or for another host; registering anew", self.path)
            return None
        if mode & 0o077:
            log.warning("controller: %s was readable by others; made it 0600", self.path)
            try:
                self.path.chmod(0o600)
            except OSError:
                pass
        return issued

    def _write(self, doc: dict[str, str]) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.unlink(missing_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(doc, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("controller: cannot keep the credential in %s (%s): the agent registers again at its next "
                        "start", self.path, exc.strerror or exc)  # fmt: skip


def credential_store(config: Any) -> CredentialStore | None:
    """The store of an agent with ``controller.url`` (None for a standalone agent)."""
    ctl = config.controller
    if not ctl.url:
        return None
    import socket

    from cloudtap.agent.controller_client import machine_id

    return CredentialStore(ctl.credential_file, ctl.url, ctl.host_name or socket.gethostname(), machine_id())

"""The control endpoint on a Unix socket, for local administration (``cloudtap agent status|start|stop``).

The socket (``control.socket``, default ``/run/cloudtap/agent.sock``) is created mode 0600 by the agent:
only its owner (root under systemd) and root can connect, so it needs no key. It is bound inside a
private (0700) temporary directory and renamed into place, so it is never reachable with looser
permissions; a peer whose uid (``SO_PEERCRED``) is neither root nor the agent's own is refused anyway. A
socket another live agent serves is left alone (this agent then has none); a stale one is replaced.
"""

from __future__ import annotations

import http.client
import logging
import os
import socket
import socketserver
import struct
import tempfile
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class _Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True
    allow_reuse_address = False

    def verify_request(self, request: Any, client_address: Any) -> bool:
        uid = peer_uid(request)
        return uid is None or uid in (0, os.getuid())


def peer_uid(sock: socket.socket) -> int | None:
    """The uid of the process at the other end of a Unix socket (None where the OS cannot say)."""
    if not hasattr(socket, "SO_PEERCRED"):
        return None
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    return int(struct.unpack("3i", creds)[1])


def _live(path: Path) -> bool:
    """True when something accepts connections on the socket at ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


class UnixControlServer:
    """Serves ``handler`` on the Unix socket ``path`` in a daemon thread.

    Raises:
        OSError: the socket cannot be created (its directory is not writable, another agent serves it).
    """

    def __init__(self, handler: type[BaseHTTPRequestHandler], path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        if self.path.exists() or self.path.is_symlink():
            if _live(self.path):
                raise OSError(f"another process serves {self.path}")
            if not self.path.is_socket():
                raise OSError(f"{self.path} exists and is not a socket")
        private = Path(tempfile.mkdtemp(prefix=".s", dir=self.path.parent))  # 0700
        try:
            staged = private / "s"
            self.server = _Server(str(staged), handler, bind_and_activate=False)
            self.server.server_bind()
            os.chmod(staged, 0o600)
            self.server.server_activate()
            os.replace(staged, self.path)
        except BaseException:
            if hasattr(self, "server"):
                self.server.server_close()
            raise
        finally:
            for leftover in private.iterdir():
                leftover.unlink(missing_ok=True)
            private.rmdir()
        self._inode = self.path.stat().st_ino
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, name="control-socket", daemon=True
        )

    @property
    def url(self) -> str:
        return f"unix:{self.path}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and remove the socket (unless another agent's has replaced it)."""
        self.server.shutdown()
        self.server.server_close()
        try:
            if self.path.stat().st_ino == self._inode:
                self.path.unlink()
        except OSError:
            pass


class UnixHTTPConnection(http.client.HTTPConnection):
    """An ``http.client`` connection to a Unix socket (clients of :class:`UnixControlServer`)."""

    def __init__(self, path: str | Path, timeout: float = 5.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = str(path)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock

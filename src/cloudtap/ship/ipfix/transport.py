"""Senders of IPFIX messages to a collector over UDP or TCP, with counters; failures are counted, never raised.

``udp://host:port``: a connected UDP socket, so an ICMP port-unreachable from a host whose collector
is down surfaces as a failed send (counted) on a later message; UDP cannot tell more than that.
``tcp://host:port``: one connection; when it breaks, messages are dropped (counted) until a reconnect
succeeds, tried at most every ``retry_s`` seconds; the caller re-sends templates after a reconnect.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from cloudtap.errors import ConfigError

#: Seconds between reconnect attempts of a TCP sender.
RETRY_S = 5.0


@dataclass(frozen=True)
class Target:
    """A collector address."""

    scheme: str  #: "udp" or "tcp"
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def parse_target(url: str) -> Target:
    """``udp://host:port`` or ``tcp://host:port`` (IPv6 literal in brackets).

    Raises:
        ConfigError: another scheme, no host, or no valid port.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"ipfix target {url!r}: {exc}") from exc
    if parts.scheme not in ("udp", "tcp"):
        raise ConfigError(f"ipfix target {url!r}: scheme must be udp:// or tcp://")
    if not parts.hostname or port is None or port == 0:
        raise ConfigError(f"ipfix target {url!r}: needs a host and a port, e.g. udp://127.0.0.1:4739")
    if parts.path not in ("", "/") or parts.query:
        raise ConfigError(f"ipfix target {url!r}: no path or query expected")
    return Target(parts.scheme, parts.hostname, port)


@dataclass
class SendCounters:
    """What one sender did."""

    messages: int = 0
    records: int = 0
    bytes: int = 0
    errors: int = 0  #: failed sends (and failed TCP connects)
    records_lost: int = 0  #: data records in messages that could not be sent
    last_error: str = ""


class Sender:
    """Send messages to one collector; ``send`` returns False (counted) instead of raising."""

    def __init__(self, target: Target, timeout_s: float = 2.0, retry_s: float = RETRY_S) -> None:
        self.target = target
        self.timeout_s = timeout_s
        self.retry_s = retry_s
        self.counters = SendCounters()
        self.connects = 0  #: successful (re)connects; each needs the templates again on TCP
        self._sock: socket.socket | None = None
        self._next_try = 0.0

    @property
    def stream(self) -> bool:
        """True on TCP (templates once per connection)."""
        return self.target.scheme == "tcp"

    def _connect(self) -> socket.socket | None:
        if self._sock is not None:
            return self._sock
        now = time.monotonic()
        if now < self._next_try:
            return None
        kind = socket.SOCK_STREAM if self.stream else socket.SOCK_DGRAM
        try:
            family, _, _, _, addr = socket.getaddrinfo(self.target.host, self.target.port, type=kind)[0]
            sock = socket.socket(family, kind)
            sock.settimeout(self.timeout_s)
            try:
                sock.connect(addr)
            except OSError:
                sock.close()
                raise
        except OSError as exc:
            self._fail(f"connect {self.target.url}: {exc}")
            self._next_try = now + self.retry_s
            return None
        if self.stream:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        self.connects += 1
        return sock

    def ready(self) -> bool:
        """Connect if needed (TCP: at most every ``retry_s``); True when a message can be sent now."""
        return self._connect() is not None

    def send(self, message: memoryview | bytes, records: int) -> bool:
        """Send one message carrying ``records`` data records; False when it was lost (counted)."""
        sock = self._connect()
        if sock is None:
            self.counters.records_lost += records
            return False
        try:
            if self.stream:
                sock.sendall(message)
            else:
                sock.send(message)
        except OSError as exc:
            self._fail(f"send to {self.target.url}: {exc}")
            self.counters.records_lost += records
            if self.stream:  # a broken stream: reconnect later, templates again
                self.close()
                self._next_try = time.monotonic() + self.retry_s
            return False
        c = self.counters
        c.messages += 1
        c.records += records
        c.bytes += len(message)
        return True

    def _fail(self, reason: str) -> None:
        self.counters.errors += 1
        self.counters.last_error = reason

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

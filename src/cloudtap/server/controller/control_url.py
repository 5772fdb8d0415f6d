"""Control URLs: where the server may reach an agent's control endpoint (PCAP retrieval), and refusals.

An agent reports its control URL at registration and in every heartbeat. The server only ever asks an
address it can vouch for, so a registered agent cannot point the server at another machine (a
request forgery with the agent's control key attached). A URL is accepted when:

- its scheme is ``http`` or ``https``, it has no user name or password, no query and no fragment;
- its port is 1-65535 (the scheme's default when absent);
- its host is an IP literal equal to the address the agent connected from, or an address inside one
  of ``controller.control_networks``, or a host name listed there exactly (names are never resolved).

A refused URL is kept empty (the agent cannot be asked), counted and shown with its reason in the
fleet status.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from cloudtap.errors import ConfigError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _address(text: str) -> Address | None:
    try:
        addr = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    mapped = getattr(addr, "ipv4_mapped", None)
    return mapped if mapped is not None else addr


class ControlNetworks:
    """The ``controller.control_networks`` allow-list: CIDRs and exact host names.

    Raises:
        ConfigError: an entry is neither a network nor a host name.
    """

    def __init__(self, entries: list[str]) -> None:
        self.networks: list[Network] = []
        self.names: set[str] = set()
        for entry in entries:
            text = entry.strip()
            try:
                self.networks.append(ipaddress.ip_network(text, strict=False))
                continue
            except ValueError:
                pass
            if not text or not all(c.isalnum() or c in ".-" for c in text) or text.startswith(("-", ".")):
                raise ConfigError(f"controller.control_networks: {entry!r} is neither a CIDR nor a host name")
            self.names.add(text.lower().rstrip("."))

    def allows_address(self, addr: Address) -> bool:
        """True when ``addr`` is inside a listed network."""
        return any(addr.version == n.version and addr in n for n in self.networks)

    def allows_name(self, name: str) -> bool:
        """True when the host name is listed."""
        return name.lower().rstrip(".") in self.names


def check_control_url(url: str, peer: str, allowed: ControlNetworks) -> str:
    """``url`` normalised (no trailing slash) when the server may ask it; ``""`` when none was reported.

    Args:
        url: what the agent reported.
        peer: the address the agent's request came from.
        allowed: the allow-list.
    Raises:
        ValueError: the URL is refused; the message says why.
    """
    url = url.strip()
    if not url:
        return ""
    if len(url) > 2048 or any(ord(c) <= 32 or ord(c) == 127 for c in url):
        raise ValueError("control URL is longer than 2048 characters or holds spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"control URL is not a URL: {exc}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError(f"control URL scheme {parts.scheme!r} is not http or https")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise ValueError("control URL must not carry a user name or password")
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise ValueError("control URL must not carry a query or a fragment")
    if port is not None and not 1 <= port <= 65535:
        raise ValueError(f"control URL port {port} is not within 1-65535")
    host = parts.hostname or ""
    if not host:
        raise ValueError("control URL has no host")
    addr = _address(host)
    if addr is not None:
        if addr == _address(peer) or allowed.allows_address(addr):
            return url.rstrip("/")
        raise ValueError(
            f"control URL host {host} is neither the address the agent connects from ({peer or 'unknown'}) nor "
            "inside controller.control_networks"
        )
    if allowed.allows_name(host):
        return url.rstrip("/")
    raise ValueError(
        f"control URL host {host!r} is a name not listed in controller.control_networks (report an IP address, "
        "or list the name)"
    )


@dataclass(frozen=True)
class UrlRefusal:
    """Why an agent's control URL was last refused, and how often it was."""

    count: int
    reason: str
    at: float


class UrlRefusals:
    """Per agent: refused control URLs (counted; the last reason kept) for the fleet status."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_agent: dict[str, UrlRefusal] = {}

    def refused(self, agent_id: str, reason: str) -> None:
        """Count one refusal."""
        with self._lock:
            old = self._by_agent.get(agent_id)
            self._by_agent[agent_id] = UrlRefusal((old.count if old else 0) + 1, reason, time.time())

    def get(self, agent_id: str) -> UrlRefusal | None:
        """The agent's refusals, or None."""
        return self._by_agent.get(agent_id)

    def accepted(self, agent_id: str) -> None:
        """The agent's URL passed: its last reason no longer applies (the count stays)."""
        with self._lock:
            old = self._by_agent.get(agent_id)
            if old is not None and old.reason:
                self._by_agent[agent_id] = UrlRefusal(old.count, "", old.at)

    def forget(self, agent_id: str) -> None:
        with self._lock:
            self._by_agent.pop(agent_id, None)

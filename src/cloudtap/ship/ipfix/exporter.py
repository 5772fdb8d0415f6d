"""IpfixExporter: flow records to one collector (encoder + sender), synchronous; the CLI and the agent use it."""

from __future__ import annotations

import re
import struct

import numpy as np

from cloudtap.errors import ConfigError
from cloudtap.ship.ipfix.elements import IPFIX_VERSION, MESSAGE_HEADER_LEN, TEMPLATE_SET_ID
from cloudtap.ship.ipfix.encoder import DEFAULT_MTU, IpfixEncoder
from cloudtap.ship.ipfix.transport import SendCounters, Sender, parse_target

#: Default message size on TCP (no datagram limit; bigger messages, fewer syscalls).
DEFAULT_TCP_MESSAGE = 16384
_TEMPLATES_FIRST = struct.pack("!H", TEMPLATE_SET_ID)


class IpfixExporter:
    """Export ``FLOW_DTYPE`` records to ``url`` (``udp://host:port`` or ``tcp://host:port``).

    UDP: messages of at most ``mtu`` bytes, templates at start, then every ``refresh_messages``
    messages and every ``refresh_s`` seconds. TCP: templates once per connection.

    Raises:
        ConfigError: a bad URL, MTU or refresh setting (at construction).
    """

    def __init__(
        self,
        url: str,
        mtu: int | None = None,
        refresh_messages: int = 100,
        refresh_s: float = 60.0,
        domain_id: int = 0,
        timeout_s: float = 2.0,
    ) -> None:
        self.target = parse_target(url)
        tcp = self.target.scheme == "tcp"
        self.encoder = IpfixEncoder(
            mtu=mtu or (DEFAULT_TCP_MESSAGE if tcp else DEFAULT_MTU),
            refresh_messages=0 if tcp else refresh_messages,
            refresh_s=float("inf") if tcp else refresh_s,
            domain_id=domain_id,
        )
        self.sender = Sender(self.target, timeout_s=timeout_s)
        self._connects_seen = 0

    @property
    def url(self) -> str:
        return self.target.url

    @property
    def counters(self) -> SendCounters:
        return self.sender.counters

    def export(self, flows: np.ndarray) -> int:
        """Encode and send ``flows``; returns the records sent (the rest are counted as lost)."""
        before = self.sender.counters.records
        if self.sender.stream and self.sender.ready() and self.sender.connects != self._connects_seen:
            self.encoder.restart_templates()  # a new connection: templates first
            self._connects_seen = self.sender.connects
        for message, records in self.encoder.messages_for(flows):  # per message
            if self.sender.stream and self.sender.ready() and self.sender.connects != self._connects_seen:
                self._connects_seen = self.sender.connects  # reconnected mid-batch
                if message[MESSAGE_HEADER_LEN : MESSAGE_HEADER_LEN + 2] != _TEMPLATES_FIRST:
                    self.sender.send(self._templates_only(bytes(message[8:12])), 0)
            self.sender.send(message, records)
        return self.sender.counters.records - before

    def _templates_only(self, sequence: bytes) -> bytes:
        templates = self.encoder.templates.tobytes()
        length = MESSAGE_HEADER_LEN + len(templates)
        head = struct.pack("!HHI", IPFIX_VERSION, length, int(self.encoder.clock()))
        return head + sequence + struct.pack("!I", self.encoder.domain_id) + templates

    def close(self) -> None:
        self.sender.close()


def exporter_for_cli(output: str) -> IpfixExporter:
    """The exporter of ``cloudtap meter --format ipfix -o URL``.

    ``-o`` is parsed as a path, which folds ``udp://`` into ``udp:/``; the scheme's slashes are restored.

    Raises:
        ConfigError: no URL, or not a valid ``udp://`` / ``tcp://`` target.
    """
    url = re.sub(r"^(udp|tcp):/+", r"\1://", output)
    if not url:
        raise ConfigError("needs -o udp://HOST:PORT or -o tcp://HOST:PORT")
    return IpfixExporter(url)

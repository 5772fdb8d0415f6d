"""MirrorConfig: where and how :class:`~cloudtap.capture.mirror.MirrorSource` receives mirrored traffic."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

from cloudtap.errors import ConfigError

_KINDS = {"vxlan": "vxlan", "gre": "gre", "erspan": "gre"}
#: The IANA VXLAN port: the default to listen on, and the destination port of every synthetic outer header.
VXLAN_PORT = 4789


@dataclass(frozen=True)
class MirrorConfig:
    """Where and how mirrored traffic is received.

    Attributes:
        kind: ``"vxlan"`` (UDP), ``"gre"`` (raw IPPROTO_GRE socket: GRE, GRE-TEB, ERSPAN I/II/III)
            or ``"erspan"`` (alias of ``"gre"``).
        bind: local address to receive on; an IPv6 address opens an IPv6 socket.
        port: UDP port (``vxlan`` only).
        recv_buffer: socket receive buffer in bytes (``SO_RCVBUFFORCE`` as root).
        batch: most datagrams handed out per ``read``.
        snaplen: most bytes kept of each datagram (longer ones are cut; ``wire_len`` stays true).
        use_recvmmsg: take a batch with one ``recvmmsg`` call (``False``: one syscall per datagram).
    """

    kind: str
    bind: str = "0.0.0.0"
    port: int = VXLAN_PORT
    recv_buffer: int = 32 << 20
    batch: int = 4096
    snaplen: int = 9216
    use_recvmmsg: bool = True

    def __post_init__(self) -> None:
        kind = str(self.kind).lower()
        if kind not in _KINDS:
            raise ConfigError(f"MirrorConfig.kind: {self.kind!r} is not one of {sorted(_KINDS)}")
        object.__setattr__(self, "kind", _KINDS[kind])
        try:
            ipaddress.ip_address(self.bind)
        except ValueError:
            raise ConfigError(f"MirrorConfig.bind: {self.bind!r} is not an IP address") from None
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 0 < self.port < 65536:
            raise ConfigError(f"MirrorConfig.port: {self.port!r} is not a UDP port (1-65535)")
        if not 1 <= self.batch <= 1 << 16:
            raise ConfigError(f"MirrorConfig.batch: {self.batch!r} is not in 1..65536")
        if not 64 <= self.snaplen <= 65535:
            raise ConfigError(f"MirrorConfig.snaplen: {self.snaplen!r} is not in 64..65535")
        if self.recv_buffer < 0:
            raise ConfigError(f"MirrorConfig.recv_buffer: {self.recv_buffer!r} is negative")

    @property
    def family(self) -> int:
        """``AF_INET`` or ``AF_INET6``, from ``bind``."""
        return socket.AF_INET6 if ipaddress.ip_address(self.bind).version == 6 else socket.AF_INET

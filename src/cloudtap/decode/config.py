"""DecodeConfig: which UDP ports carry tunnels and whether to look inside them."""

from __future__ import annotations

from dataclasses import dataclass

from cloudtap.errors import ConfigError


@dataclass(frozen=True)
class DecodeConfig:
    """Decoder settings.

    Attributes:
        vxlan_ports: UDP destination ports decoded as VXLAN (4789 IANA, 8472 Linux default).
        geneve_ports: UDP destination ports decoded as Geneve.
        decapsulate: ``True`` keys rows on the innermost packet; ``False`` on the outer headers.
    """

    vxlan_ports: tuple[int, ...] = (4789, 8472)
    geneve_ports: tuple[int, ...] = (6081,)
    decapsulate: bool = True

    def __post_init__(self) -> None:
        for name in ("vxlan_ports", "geneve_ports"):
            ports = tuple(getattr(self, name))
            object.__setattr__(self, name, ports)
            for port in ports:
                if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
                    raise ConfigError(f"DecodeConfig.{name}: {port!r} is not a UDP port (1-65535)")
        both = set(self.vxlan_ports) & set(self.geneve_ports)
        if both:
            raise ConfigError(f"DecodeConfig: ports {sorted(both)} are listed as both VXLAN and Geneve")

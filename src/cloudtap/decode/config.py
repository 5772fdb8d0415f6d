"""DecodeConfig: which UDP ports carry tunnels and whether to look inside them."""

from __future__ import annotations

from dataclasses import dataclass

from cloudtap.errors import ConfigError

#: Tunnels recognised by UDP port, in ``DecodeConfig`` field order (``<name>_ports``).
_PORT_FIELDS = ("vxlan", "geneve", "gtpu", "teredo", "gre_udp", "mpls_udp")
_LABELS = {
    "vxlan": "VXLAN", "geneve": "Geneve", "gtpu": "GTP-U", "teredo": "Teredo",
    "gre_udp": "GRE-in-UDP", "mpls_udp": "MPLS-in-UDP",
}  # fmt: skip


@dataclass(frozen=True)
class DecodeConfig:
    """Decoder settings.

    Attributes:
        vxlan_ports: UDP destination ports decoded as VXLAN (4789 IANA, 8472 Linux default).
        geneve_ports: UDP destination ports decoded as Geneve.
        gtpu_ports: UDP ports (source or destination) decoded as GTPv1-U.
        teredo_ports: UDP ports (source or destination) decoded as Teredo.
        gre_udp_ports: UDP destination ports decoded as GRE-in-UDP (RFC 8086).
        mpls_udp_ports: UDP destination ports decoded as MPLS-in-UDP (RFC 7510).
        decapsulate: ``True`` keys rows on the innermost packet; ``False`` on the outer headers.
    """

    vxlan_ports: tuple[int, ...] = (4789, 8472)
    geneve_ports: tuple[int, ...] = (6081,)
    gtpu_ports: tuple[int, ...] = (2152,)
    teredo_ports: tuple[int, ...] = (3544,)
    gre_udp_ports: tuple[int, ...] = (4754,)
    mpls_udp_ports: tuple[int, ...] = (6635,)
    decapsulate: bool = True

    def port_lists(self) -> dict[str, tuple[int, ...]]:
        """Tunnel name -> its UDP ports, for every tunnel recognised by port."""
        return {name: getattr(self, f"{name}_ports") for name in _PORT_FIELDS}

    def __post_init__(self) -> None:
        seen: dict[int, str] = {}
        for tunnel in _PORT_FIELDS:
            name = f"{tunnel}_ports"
            ports = tuple(getattr(self, name))
            object.__setattr__(self, name, ports)
            for port in ports:
                if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
                    raise ConfigError(f"DecodeConfig.{name}: {port!r} is not a UDP port (1-65535)")
                if seen.setdefault(port, tunnel) != tunnel:
                    raise ConfigError(
                        f"DecodeConfig: port {port} is listed for both {_LABELS[seen[port]]} and {_LABELS[tunnel]}"
                    )

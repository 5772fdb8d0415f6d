"""The interfaces an agent's pcapng answer declares (its leading Interface Description Blocks)."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

_SHB = 0x0A0D0D0A
_IDB = 1
_OPT_IF_NAME = 2
_OPT_IF_DESCRIPTION = 3


@dataclass(frozen=True)
class AgentInterface:
    """One capture point of an agent's answer."""

    linktype: int
    name: str
    host: str
    vm: str
    interface: str

    def label(self, host: str | None = None) -> str:
        """``<host>/<vm>/<interface>`` (``-`` for an unknown VM)."""
        return f"{host or self.host}/{self.vm}/{self.interface}"


def read_interfaces(path: Path, default_host: str = "-") -> list[AgentInterface]:
    """Parse the Section Header and the Interface Description Blocks that open ``path``.

    The agent describes each IDB as ``host=<h> vm=<vm> interface=<name>``; a file without that
    description uses the IDB name as the interface.

    Raises:
        ValueError: the file is not a little-endian pcapng written by an agent.
    """
    raw = path.read_bytes()[: 1 << 20]
    if len(raw) < 12 or struct.unpack_from("<I", raw, 0)[0] != _SHB:
        raise ValueError(f"{path}: not a pcapng answer")
    pos = struct.unpack_from("<I", raw, 4)[0]
    out: list[AgentInterface] = []
    while pos + 12 <= len(raw):
        btype, blen = struct.unpack_from("<II", raw, pos)
        if btype != _IDB or blen < 20 or pos + blen > len(raw):
            break
        linktype = struct.unpack_from("<H", raw, pos + 8)[0]
        name, desc = "", ""
        p, stop = pos + 16, pos + blen - 4
        while p + 4 <= stop:
            code, olen = struct.unpack_from("<HH", raw, p)
            if code == 0:
                break
            value = raw[p + 4 : p + 4 + olen].decode(errors="replace")
            if code == _OPT_IF_NAME:
                name = value
            elif code == _OPT_IF_DESCRIPTION:
                desc = value
            p += 4 + ((olen + 3) & ~3)
        fields = dict(kv.split("=", 1) for kv in desc.split() if "=" in kv)
        out.append(
            AgentInterface(
                linktype=linktype,
                name=name,
                host=fields.get("host", default_host),
                vm=fields.get("vm", "-"),
                interface=fields.get("interface", name),
            )
        )
        pos += blen
    return out

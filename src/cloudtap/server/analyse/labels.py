"""Names of nodes: inventory names at the analysed moment, else ``id:<n>`` (or the IP at the ip level)."""

from __future__ import annotations

from collections.abc import Iterable

from cloudtap.inventory.names import NameResolver

#: Label of identity id 0 (the inventory did not know the address).
UNKNOWN = "unknown"


def id_names(names: NameResolver, kind: str, ids: Iterable[int], at_ns: int | None) -> dict[int, str]:
    """id -> label for ``ids`` of ``kind``: the inventory name, ``id:<n>`` without one, ``unknown`` for 0."""
    wanted = sorted({int(i) for i in ids})
    try:
        known = names.names(kind, [i for i in wanted if i], at_ns)
    except Exception:  # a failing inventory must not fail the analysis: show ids
        known = {}
    return {i: (UNKNOWN if i == 0 else known.get(i) or f"id:{i}") for i in wanted}


def node_id(level: str, key: str | int) -> str:
    """Stable node id: the IP at the ip level, ``<level>:<id>`` otherwise."""
    return str(key) if level == "ip" else f"{level}:{int(key)}"


def ip_labels(names: NameResolver, ip_vm: dict[str, int], at_ns: int | None) -> dict[str, str]:
    """IP -> label: the name of the VM behind it when known, else the IP itself."""
    vm = id_names(names, "vm", [v for v in ip_vm.values() if v], at_ns)
    out = {}
    for ip, vm_id in ip_vm.items():
        label = vm.get(vm_id) if vm_id else None
        out[ip] = label if label and not label.startswith("id:") else ip
    return out

"""Mirror mode: which VM port each mirrored record was copied from (vectorised over a table).

A mirror collector sees every VM through one socket, so the tap-port identity (interface -> VM MAC)
does not exist. Instead each record is attributed, in this order:

1. by the **mirror mapping** (agent config ``mirror.sessions``): the record's ERSPAN session id /
   GRE key (``session:N``), VXLAN/Geneve VNI (``vni:N``), any tunnel id (``N``), then inner VLAN
   (``vlan:N``) selects an entry; of the entry's VMs, the one whose MAC is the record's client MAC,
   else its server MAC, else the entry's only VM;
2. by **inner MAC**: the client MAC, else the server MAC, when it is a MAC of any configured VM.

The record then carries ``interface_name`` = the entry's label (default its key; unmatched:
``<tunnel type>:<id>``, ``vlan:N`` or ``mirror``), ``vm_mac`` and ``vm_domain`` (the VM's name) — the
same columns a tap-port record has, so the server tags it the same way (then by inner MAC and IP).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

KIND_SESSION, KIND_VNI, KIND_TUNNEL, KIND_VLAN = 1, 2, 3, 4
_PREFIXES = {
    "session": KIND_SESSION, "erspan": KIND_SESSION, "gre": KIND_SESSION,
    "vni": KIND_VNI, "vxlan": KIND_VNI, "geneve": KIND_VNI, "vlan": KIND_VLAN,
}  # fmt: skip
_SESSION_TYPES = ("gre", "erspan1", "erspan2", "erspan3")
_VNI_TYPES = ("vxlan", "geneve")
_MAC_BITS = np.uint64(48)
_COLUMNS = ("interface_name", "vm_domain", "vm_mac")


def parse_key(text: str) -> tuple[int, int]:
    """``(kind, id)`` of a mapping key (``session:N``, ``vni:N``, ``vlan:N`` or ``N``).

    Raises:
        ValueError: not one of those forms, or the id out of range.
    """
    prefix, _, number = str(text).strip().lower().rpartition(":")
    kind = _PREFIXES.get(prefix) if prefix else KIND_TUNNEL
    if kind is None or not number.isdigit():
        raise ValueError(f"mirror key {text!r}: expected session:N, vni:N, vlan:N or N")
    value = int(number)
    limit = 4094 if kind == KIND_VLAN else (1 << 32) - 1
    if not (1 if kind == KIND_VLAN else 0) <= value <= limit:
        raise ValueError(f"mirror key {text!r}: id out of range (0..{limit})")
    return kind, value


def parse_mac(text: str) -> int:
    """A MAC (``aa:bb:cc:dd:ee:ff``, ``aa-bb-..``, ``aabb.ccdd.eeff``) as an integer.

    Raises:
        ValueError: not a MAC.
    """
    digits = str(text).replace(":", "").replace("-", "").replace(".", "").lower()
    if len(digits) != 12 or any(c not in "0123456789abcdef" for c in digits):
        raise ValueError(f"not a MAC address: {text!r}")
    return int(digits, 16)


def mac_text(value: int) -> str:
    """``aa:bb:cc:dd:ee:ff`` of an integer MAC ('' for 0)."""
    if not value:
        return ""
    h = f"{int(value):012x}"
    return ":".join(h[i : i + 2] for i in range(0, 12, 2))


def _lookup(keys: np.ndarray, vals: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Value of each query in sorted ``keys`` (-1 where absent)."""
    out = np.full(query.shape[0], -1, np.int64)
    if keys.size and query.size:
        pos = np.minimum(np.searchsorted(keys, query), keys.size - 1)
        hit = keys[pos] == query
        out[hit] = vals[pos[hit]]
    return out


class MirrorAttribution:
    """Per-record VM attribution of mirrored traffic from a ``mirror.sessions`` mapping.

    Args:
        sessions: key (``session:N`` ...) -> target with ``name`` (label) and ``vms`` (MAC -> VM name);
            targets may be pydantic models or mappings.
    """

    def __init__(self, sessions: Mapping[str, Any]) -> None:
        keys, labels, sole = [], [], []
        pairs: list[int] = []
        names: dict[int, str] = {}
        for i, (key, target) in enumerate(sessions.items()):
            kind, ident = parse_key(key)
            get = target.get if isinstance(target, Mapping) else lambda k, t=target: getattr(t, k)
            vms = {parse_mac(m): str(n) for m, n in (get("vms") or {}).items()}
            keys.append(kind << 32 | ident)
            labels.append(str(get("name") or key))
            sole.append(next(iter(vms)) if len(vms) == 1 else 0)
            pairs.extend(i << 48 | mac for mac in vms)
            for mac, name in vms.items():
                names.setdefault(mac, name)
        order = np.argsort(np.asarray(keys, np.uint64), kind="stable")
        self._keys = np.asarray(keys, np.uint64)[order]
        self._entries = order.astype(np.int64)
        self._labels = np.asarray(labels + [""], dtype=object)
        self._sole = np.asarray(sole + [0], np.uint64)
        self._pairs = np.unique(np.asarray(pairs, np.uint64))
        macs = sorted(names)
        self._macs = np.asarray(macs, np.uint64)
        self._mac_names = np.asarray([names[m] for m in macs] + [""], dtype=object)

    @property
    def empty(self) -> bool:
        """No entry and no VM configured."""
        return self._keys.size == 0

    def entries(self, table: pa.Table) -> np.ndarray:
        """Mapping entry of each row (-1: none), by tunnel (session / VNI / any id), then inner VLAN."""
        n = table.num_rows
        tid = _uint(table, "tunnel_id", n)
        vlan = _uint(table, "vlan", n)
        if "tunnel_type" in table.column_names:
            ttype = table["tunnel_type"]
            kinds = [(KIND_SESSION, _is_in(ttype, _SESSION_TYPES)), (KIND_VNI, _is_in(ttype, _VNI_TYPES)),
                     (KIND_TUNNEL, pc.not_equal(ttype, "").fill_null(False).to_numpy(zero_copy_only=False))]  # fmt: skip
        else:  # edges: no tunnel type; a non-zero id is tried as a session, a VNI, then any id
            some = tid != 0
            kinds = [(KIND_SESSION, some), (KIND_VNI, some), (KIND_TUNNEL, some)]
        entry = np.full(n, -1, np.int64)
        for kind, mask in kinds:
            m = np.asarray(mask, bool) & (entry < 0)
            if m.any():
                entry[m] = _lookup(self._keys, self._entries, (np.uint64(kind) << np.uint64(32)) | tid[m])
        m = (entry < 0) & (vlan != 0)
        if m.any():
            entry[m] = _lookup(self._keys, self._entries, (np.uint64(KIND_VLAN) << np.uint64(32)) | vlan[m])
        return entry

    def vm_macs(self, table: pa.Table, entry: np.ndarray) -> np.ndarray:
        """VM MAC of each row (0: none): the entry's VM with the client / server MAC, its only VM, any VM."""
        n = table.num_rows
        sides = [_uint(table, c, n) for c in ("client_mac", "server_mac")]
        out = np.zeros(n, np.uint64)
        has = entry >= 0
        ent = np.where(has, entry, 0).astype(np.uint64) << _MAC_BITS
        for mac in sides:
            m = has & (out == 0) & (mac != 0)
            if m.any() and self._pairs.size:
                pair = ent[m] | mac[m]
                pos = np.minimum(np.searchsorted(self._pairs, pair), self._pairs.size - 1)
                out[np.flatnonzero(m)[self._pairs[pos] == pair]] = mac[m][self._pairs[pos] == pair]
        m = has & (out == 0)
        out[m] = self._sole[entry[m]]
        for mac in sides:
            m = (out == 0) & (mac != 0)
            if m.any() and self._macs.size:
                pos = np.minimum(np.searchsorted(self._macs, mac[m]), self._macs.size - 1)
                hit = self._macs[pos] == mac[m]
                out[np.flatnonzero(m)[hit]] = mac[m][hit]
        return out

    def labels(self, table: pa.Table, entry: np.ndarray) -> np.ndarray:
        """Observation point label of each row: the entry's, else ``<tunnel type>:<id>``, ``vlan:N``, ``mirror``."""
        n = table.num_rows
        out = self._labels[np.where(entry >= 0, entry, len(self._labels) - 1)]
        free = np.flatnonzero(entry < 0)
        if free.size:
            tid = _uint(table, "tunnel_id", n)[free]
            vlan = _uint(table, "vlan", n)[free]
            if "tunnel_type" in table.column_names:
                ttype = np.asarray(table["tunnel_type"].to_numpy(zero_copy_only=False), dtype=object)[free]
            else:
                ttype = np.where(tid != 0, "tunnel", "").astype(object)
            combo = np.stack([np.unique(ttype, return_inverse=True)[1].astype(np.uint64), tid, vlan], axis=1)
            uniq, first, inv = np.unique(combo, axis=0, return_index=True, return_inverse=True)
            text = np.asarray(
                [
                    f"{ttype[f]}:{tid[f]}" if ttype[f] else (f"vlan:{vlan[f]}" if vlan[f] else "mirror")
                    for f in first
                ],
                dtype=object,
            )
            out = out.copy()
            out[free] = text[inv.reshape(-1)]
        return out

    def annotate(self, table: pa.Table) -> pa.Table:
        """``table`` with ``interface_name``, ``vm_domain`` and ``vm_mac`` set from the mapping (replaced if present)."""
        entry = self.entries(table)
        macs = self.vm_macs(table, entry)
        uniq, inv = np.unique(macs, return_inverse=True)
        mac_texts = np.asarray([mac_text(int(m)) for m in uniq], dtype=object)[inv.reshape(-1)]
        pos = _lookup(self._macs, np.arange(self._macs.size, dtype=np.int64), uniq)
        domains = self._mac_names[np.where(pos >= 0, pos, len(self._mac_names) - 1)][inv.reshape(-1)]
        values = {"interface_name": self.labels(table, entry), "vm_domain": domains, "vm_mac": mac_texts}
        for name in _COLUMNS:
            arr = pa.array(values[name], pa.string())
            if name in table.column_names:
                table = table.set_column(table.column_names.index(name), name, arr)
            else:
                table = table.append_column(name, arr)
        return table


def _uint(table: pa.Table, name: str, n: int) -> np.ndarray:
    if name not in table.column_names or not pa.types.is_integer(table[name].type):
        return np.zeros(n, np.uint64)
    return np.asarray(table[name].fill_null(0).to_numpy(zero_copy_only=False)).astype(np.uint64, copy=False)


def _is_in(column: pa.ChunkedArray, values: tuple[str, ...]) -> np.ndarray:
    return np.asarray(
        pc.is_in(column, value_set=pa.array(values)).fill_null(False).to_numpy(zero_copy_only=False)
    )

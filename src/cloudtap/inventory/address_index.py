"""The inventory's addresses as sorted lookup arrays, and the match of one side of many rows against them.

:func:`build_index` turns one inventory view into an :class:`AddressIndex`; :func:`match_rows` finds each
row's address by IP within its segment, IP alone, MAC, then subnet CIDR, with a few ``np.searchsorted`` per
step (the order and its rules: ``inventory/tagging.py``).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

import numpy as np

from cloudtap.inventory.addresses import ID_FIELDS, AddressRecord, derive_addresses
from cloudtap.inventory.view import InventoryView
from cloudtap.schema.packet import IPV4_MAPPED_LO

_IP = np.dtype([("hi", "u8"), ("lo", "u8")])
_SEG_IP = np.dtype([("seg", "u8"), ("hi", "u8"), ("lo", "u8")])
_GLOBAL_SEG = 1 << 40  #: segment key of subnets matched regardless of segment
_FULL = (1 << 64) - 1
_CIDR_IDS = ("subnet", "project", "region")
_INDEX_IPS: dict[str, tuple[int, int]] = {}  #: parsed inventory addresses, shared by index builds


def parse_ips(texts: list[str | None], cache: dict[str, tuple[int, int]]) -> np.ndarray:
    """(hi, lo) of each text (0, 0 when empty or not an address), using and filling ``cache``."""
    out = np.zeros(len(texts), _IP)
    for i, text in enumerate(texts):
        if not text:
            continue
        found = cache.get(text)
        if found is None:
            try:
                addr = ipaddress.ip_address(text)
            except ValueError:
                found = (0, 0)
            else:
                if addr.version == 4:
                    found = (0, IPV4_MAPPED_LO | int(addr))
                else:
                    v = int(addr)
                    found = (v >> 64, v & _FULL)
            if len(cache) > 1_000_000:
                cache.clear()
            cache[text] = found
        out[i] = found
    return out


def _mask(plen128: int) -> tuple[int, int]:
    full = (1 << 128) - 1
    m = full ^ ((1 << (128 - plen128)) - 1)
    return m >> 64, m & _FULL


def mac_int(text: str) -> int:
    digits = text.replace(":", "").replace("-", "").replace(".", "")
    try:
        return int(digits, 16) if len(digits) == 12 else 0
    except ValueError:
        return 0


@dataclass
class AddressIndex:
    """Sorted lookup arrays of one inventory view."""

    ips: np.ndarray  #: _IP sorted unique
    seg_keys: np.ndarray  #: uint64 (segment << 32 | ip ordinal), sorted
    seg_rows: np.ndarray  #: int64 address row of each seg_key
    glob: np.ndarray  #: int64 per ip ordinal: address row or -1 (none / ambiguous)
    mac_keys: np.ndarray  #: uint64 MACs, sorted
    mac_rows: np.ndarray  #: int64
    mac_free: np.ndarray  #: bool per address row: its interface lists no IP
    iface_ip: np.ndarray  #: uint64 (interface_id << 32 | ip ordinal), sorted
    row_iface: np.ndarray  #: uint64 interface id per address row
    ids: np.ndarray  #: uint32 [rows + 1, len(ID_FIELDS)]; the last row is all zeros
    cidr: list[tuple[int, int, np.ndarray, np.ndarray]] = field(default_factory=list)
    #: per prefix length (longest first): (hi mask, lo mask, sorted _SEG_IP keys, uint32 [n, 3] ids)

    @property
    def empty(self) -> bool:
        return self.ids.shape[0] <= 1 and not self.cidr


def _unique_rows(keys: np.ndarray, rows: np.ndarray, payload: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct keys with their row; keys whose rows disagree on payload are dropped."""
    if keys.size == 0:
        return keys, rows
    order = np.lexsort((rows, keys))
    keys, rows = keys[order], rows[order]
    uniq, start, counts = np.unique(keys, return_index=True, return_counts=True)
    first = rows[start]
    ok = np.ones(uniq.size, bool)
    for j in np.flatnonzero(counts > 1):
        group = rows[start[j] : start[j] + counts[j]]
        ok[j] = bool((payload[group] == payload[group[0]]).all())
    return uniq[ok], first[ok]


def build_index(view: InventoryView, addresses: list[AddressRecord] | None = None) -> AddressIndex:
    """Lookup arrays of ``view`` (``addresses`` defaults to :func:`derive_addresses` of it)."""
    recs = derive_addresses(view) if addresses is None else addresses
    n = len(recs)
    ids = np.zeros((n + 1, len(ID_FIELDS)), np.uint32)
    for i, r in enumerate(recs):
        ids[i] = [getattr(r, f"{f}_id") for f in ID_FIELDS]
    row_iface = np.asarray([r.interface_id for r in recs], np.uint64)
    payload = np.concatenate([ids[:n], row_iface[:, None].astype(np.uint32)], axis=1) if n else ids[:0]
    pairs = parse_ips([r.ip for r in recs], _INDEX_IPS)
    has_ip = np.asarray([bool(r.ip) for r in recs], bool)
    ips = np.unique(pairs[has_ip])
    ord_ = np.full(n, -1, np.int64)
    if n and ips.size:
        ord_[has_ip] = np.searchsorted(ips, pairs[has_ip])
    rows = np.arange(n, dtype=np.int64)
    seg = np.asarray([r.segment for r in recs], np.uint64)
    m = has_ip & (seg != 0)
    seg_keys, seg_rows = _unique_rows((seg[m] << np.uint64(32)) | ord_[m].astype(np.uint64), rows[m], payload)
    g_keys, g_rows = _unique_rows(ord_[has_ip].astype(np.uint64), rows[has_ip], payload)
    glob = np.full(ips.size, -1, np.int64)
    glob[g_keys.astype(np.int64)] = g_rows
    macs = np.asarray([mac_int(r.mac) if r.mac else 0 for r in recs], np.uint64)
    m = macs != 0
    mac_keys, mac_rows = _unique_rows(macs[m], rows[m], payload)
    iface_has_ip: dict[int, bool] = {}
    for r in recs:
        if r.interface_id:
            iface_has_ip[r.interface_id] = iface_has_ip.get(r.interface_id, False) or bool(r.ip)
    mac_free = np.asarray([not iface_has_ip.get(r.interface_id, False) for r in recs], bool)
    m = has_ip & (row_iface != 0)
    iface_ip = np.unique((row_iface[m] << np.uint64(32)) | ord_[m].astype(np.uint64))
    return AddressIndex(
        ips=ips,
        seg_keys=seg_keys,
        seg_rows=seg_rows,
        glob=glob,
        mac_keys=mac_keys,
        mac_rows=mac_rows,
        mac_free=mac_free,
        iface_ip=iface_ip,
        row_iface=row_iface,
        ids=ids,
        cidr=_cidr_tables(view),
    )


def _cidr_tables(view: InventoryView) -> list[tuple[int, int, np.ndarray, np.ndarray]]:
    nets = view.by_key("network")
    projects = view.by_key("project")
    single_region = view.snapshot.regions[0].key if len(view.snapshot.regions) == 1 else ""
    by_len: dict[int, list[tuple[int, int, int, int, int, int]]] = {}
    for sub in view.snapshot.subnets:
        try:
            net = ipaddress.ip_network(sub.cidr, strict=False)
        except ValueError:
            continue
        network = nets.get(sub.network)
        seg = int(network.segment) if network is not None and network.segment else 0
        proj_key = sub.project or (network.project if network is not None else "")
        proj = projects.get(proj_key)
        region = (proj.region if proj is not None and proj.region else "") or single_region
        if net.version == 4:
            plen, hi, lo = net.prefixlen + 96, 0, IPV4_MAPPED_LO | int(net.network_address)
        else:
            plen, v = net.prefixlen, int(net.network_address)
            hi, lo = v >> 64, v & _FULL
        ids = (view.id_of("subnet", sub.key), view.id_of("project", proj_key), view.id_of("region", region))
        entries = by_len.setdefault(plen, [])
        if seg:
            entries.append((seg, hi, lo, *ids))
        entries.append((_GLOBAL_SEG, hi, lo, *ids))
    tables = []
    for plen in sorted(by_len, reverse=True):
        entries = by_len[plen]
        keys = np.zeros(len(entries), _SEG_IP)
        keys["seg"] = [e[0] for e in entries]
        keys["hi"] = [e[1] for e in entries]
        keys["lo"] = [e[2] for e in entries]
        vals = np.asarray([e[3:] for e in entries], np.uint32).reshape(-1, 3)
        order = np.argsort(keys, kind="stable")
        keys, vals = keys[order], vals[order]
        uniq, start, counts = np.unique(keys, return_index=True, return_counts=True)
        ok = np.asarray(
            [bool((vals[s : s + c] == vals[s]).all()) for s, c in zip(start, counts, strict=True)], bool
        )
        hmask, lmask = _mask(plen)
        tables.append((hmask, lmask, uniq[ok], vals[start[ok]]))
    return tables


def _lookup(keys: np.ndarray, vals: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Row of each query key in sorted ``keys`` (-1 when absent)."""
    out = np.full(query.shape[0], -1, np.int64)
    if keys.size == 0 or query.size == 0:
        return out
    pos = np.searchsorted(keys, query)
    pos = np.minimum(pos, keys.size - 1)
    hit = keys[pos] == query
    out[hit] = vals[pos[hit]]
    return out


def match_rows(
    index: AddressIndex,
    codes: np.ndarray,
    pairs: np.ndarray,
    vlan: np.ndarray,
    tun: np.ndarray,
    mac: np.ndarray,
    vm_mac: np.ndarray,
) -> np.ndarray:
    """Identity ids (``uint32[n, len(ID_FIELDS)]``, zeros where nothing matched) of one side of each row.

    Args:
        index: the inventory's lookup arrays.
        codes: per row, the code of its IP text in ``pairs`` (-1: null).
        pairs: parsed (hi, lo) of each distinct IP text.
        vlan, tun: per row, the segment ids tried in turn (0: none).
        mac, vm_mac: per row, the side's own MAC and the tap port's VM MAC (0: unknown).
    """
    n = codes.shape[0]
    # distinct texts -> inventory IP ordinal
    dict_ord = np.full(pairs.shape[0] + 1, -1, np.int64)  # last slot: null code -1
    if index.ips.size and pairs.size:
        pos = np.minimum(np.searchsorted(index.ips, pairs), index.ips.size - 1)
        hit = index.ips[pos] == pairs
        dict_ord[:-1][hit] = pos[hit]
    ords = dict_ord[codes]
    row = np.full(n, -1, np.int64)
    known = ords >= 0
    uord = ords.astype(np.uint64)
    for seg in (tun, vlan):
        m = known & (row < 0) & (seg != 0)
        if m.any() and index.seg_keys.size:
            row[m] = _lookup(
                index.seg_keys, index.seg_rows, (seg[m].astype(np.uint64) << np.uint64(32)) | uord[m]
            )
    m = known & (row < 0)
    if m.any():
        row[m] = index.glob[ords[m]]
    for macs in (mac, vm_mac):
        m = (row < 0) & (macs != 0)
        if m.any() and index.mac_keys.size:
            cand = _lookup(index.mac_keys, index.mac_rows, macs[m])
            ok = cand >= 0
            free = np.zeros(cand.shape[0], bool)
            free[ok] = index.mac_free[cand[ok]]
            if index.iface_ip.size:
                sel = ok & ~free & (ords[m] >= 0)
                pair = (index.row_iface[cand[sel]] << np.uint64(32)) | uord[m][sel]
                pos = np.minimum(np.searchsorted(index.iface_ip, pair), index.iface_ip.size - 1)
                free[np.flatnonzero(sel)] = index.iface_ip[pos] == pair
            cand[~free] = -1
            row[m] = cand
    ids = index.ids[row]  # row -1 -> the zero row
    if index.cidr:
        need = np.flatnonzero((row < 0) & (codes >= 0))
        if need.size:
            _match_cidr(index, ids, need, pairs[codes[need]], vlan[need], tun[need])
    return ids


def _match_cidr(
    index: AddressIndex,
    ids: np.ndarray,
    rows: np.ndarray,
    addr: np.ndarray,
    vlan: np.ndarray,
    tun: np.ndarray,
) -> None:
    """Fill subnet/project/region ids of ``rows`` by longest-prefix match (segment, then global)."""
    cols = [ID_FIELDS.index(f) for f in _CIDR_IDS]
    todo = np.ones(rows.size, bool)
    for hmask, lmask, keys, vals in index.cidr:
        for seg in (tun, vlan, None):
            m = todo & ((seg != 0) if seg is not None else True)
            if not m.any():
                continue
            q = np.zeros(int(m.sum()), _SEG_IP)
            q["seg"] = _GLOBAL_SEG if seg is None else seg[m]
            q["hi"] = addr["hi"][m] & np.uint64(hmask)
            q["lo"] = addr["lo"][m] & np.uint64(lmask)
            pos = np.minimum(np.searchsorted(keys, q), keys.size - 1)
            hit = keys[pos] == q
            if hit.any():
                sel = np.flatnonzero(m)[hit]
                for j, c in enumerate(cols):
                    ids[rows[sel], c] = vals[pos[hit], j]
                todo[sel] = False
        if not todo.any():
            return

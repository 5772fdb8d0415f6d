"""Tag flow and edge batches with cloud identity ids, as the inventory was at each record's time.

For each side (``client`` / ``server``) of every row, the address is looked up:

1. by IP within the row's segment: ``tunnel_id`` (VNI) first, then ``vlan``, when an inventory
   network carries that segment id (an ERSPAN session id is a mirror session, never a segment:
   rows whose ``tunnel_type`` is ``erspan1/2/3`` use ``vlan`` only);
2. by IP alone, when the IP belongs to exactly one inventory address (no overlap between tenants);
3. by MAC (``client_mac`` / ``server_mac`` of flow records, and the agent's ``vm_mac``), when the
   interface with that MAC has no known IP or lists the row's IP; ``vm_mac`` (the VM of the tap port
   or mirror session the record was seen on) only for a side whose own MAC is unknown or is it;
4. else by subnet CIDR (longest prefix, within the segment, then globally when unambiguous): only
   subnet, project and region ids.

Everything is vectorised: IP texts are dictionary-encoded and parsed once per distinct value, then
each row is a few ``np.searchsorted`` over sorted integer keys. Rows are grouped by the stretch of
inventory history their time falls in (``InventoryStore.boundaries``): a flow from last week gets
last week's host. Lookup indexes are cached per stretch until the inventory changes.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cloudtap.inventory.address_index import AddressIndex, build_index, mac_int, match_rows, parse_ips
from cloudtap.inventory.addresses import ID_FIELDS
from cloudtap.inventory.store import InventoryStore

SIDES = ("client", "server")
#: Time column of each stream kind (the first present is used).
TIME_COLUMNS = ("first_ns", "time_ns", "start_ns", "req_ns")  # flows, edges, requests
#: Tunnel types whose id is a mirror session, not a network segment.
MIRROR_SESSION_TUNNELS = ("erspan1", "erspan2", "erspan3")


def identity_columns() -> list[str]:
    """Names of the columns tagging fills: ``client_region_id`` ... ``server_service_id``."""
    return [f"{side}_{f}_id" for side in SIDES for f in ID_FIELDS]


@dataclass
class TaggingStats:
    """Counters of the tagger."""

    rows: int = 0
    sides_matched: int = 0  #: row sides that got at least a project, VM, host, pod or service id
    batches: int = 0


class Tagger:
    """Fills ``client_<f>_id`` / ``server_<f>_id`` columns from an :class:`InventoryStore`.

    Args:
        inventory: the inventory with history.
        cache_size: lookup indexes kept (one per stretch of history recently used).
    """

    def __init__(self, inventory: InventoryStore, cache_size: int = 16) -> None:
        self.inventory = inventory
        self.cache_size = cache_size
        self.stats = TaggingStats()
        self._indexes: OrderedDict[tuple[int, int | None], AddressIndex] = OrderedDict()
        self._ip_cache: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()

    def index_at(self, ns: int | None) -> AddressIndex:
        """The lookup index of the inventory at ``ns`` (``None``: now)."""
        with self._lock:  # ingest requests tag concurrently
            epoch = None if ns is None else self.inventory.epoch_of(ns)
            key = (self.inventory.revision, -1 if (ns is not None and epoch is None) else epoch)
            found = self._indexes.get(key)
            if found is None:
                found = build_index(self.inventory.view(ns))
                self._indexes[key] = found
                while len(self._indexes) > self.cache_size:
                    self._indexes.popitem(last=False)
            else:
                self._indexes.move_to_end(key)
            return found

    def tag_tables(self, tables: dict[str, pa.Table]) -> dict[str, pa.Table]:
        """Tag every table of a batch (``kind -> table``)."""
        return {kind: self.tag(table) for kind, table in tables.items()}

    def tag(self, table: pa.Table) -> pa.Table:
        """Return ``table`` with the identity columns filled (existing non-zero values are kept).

        Tables without ``client_ip`` / ``server_ip`` are returned unchanged.
        """
        n = table.num_rows
        if n == 0 or "client_ip" not in table.column_names or "server_ip" not in table.column_names:
            return table
        tcol = next((c for c in TIME_COLUMNS if c in table.column_names), None)
        times = None if tcol is None else np.asarray(table[tcol].to_numpy(zero_copy_only=False), np.int64)
        vlan = _int_column(table, "vlan", n)
        tun = _int_column(table, "tunnel_id", n)
        if "tunnel_type" in table.column_names and not pa.types.is_integer(table["tunnel_type"].type):
            ttype = table["tunnel_type"].combine_chunks()
            if pa.types.is_dictionary(ttype.type):
                ttype = ttype.cast(pa.string())
            session = pc.is_in(ttype, value_set=pa.array(MIRROR_SESSION_TUNNELS))
            tun = np.where(np.asarray(session.fill_null(False).to_numpy(zero_copy_only=False)), 0, tun)
        vm_mac = _mac_column(table, "vm_mac", n)
        sides = {}
        for side in SIDES:
            codes, pairs = self._encode(table[f"{side}_ip"])
            mac = _int_column(table, f"{side}_mac", n)
            sides[side] = (codes, pairs, mac, np.where((mac == 0) | (mac == vm_mac), vm_mac, 0))
        out = {side: np.zeros((n, len(ID_FIELDS)), np.uint32) for side in SIDES}
        if times is None:
            groups: list[tuple[int | None, np.ndarray | None]] = [(None, None)]
        else:
            bounds = self.inventory.boundaries()
            epoch = np.searchsorted(bounds, times, side="right") - 1
            uniq = np.unique(epoch)
            if uniq.size == 1:
                groups = [(int(times[0]), None)]
            else:
                groups = [(int(times[epoch == e][0]), np.flatnonzero(epoch == e)) for e in uniq]
        for at, rows in groups:
            index = self.index_at(at)
            if index.empty:
                continue
            for side in SIDES:
                codes, pairs, mac, side_vm = sides[side]
                if rows is None:
                    out[side][:] = match_rows(index, codes, pairs, vlan, tun, mac, side_vm)
                else:
                    out[side][rows] = match_rows(
                        index, codes[rows], pairs, vlan[rows], tun[rows], mac[rows], side_vm[rows]
                    )
        self.stats.rows += n
        self.stats.batches += 1
        return _set_columns(table, out, self.stats)

    def _encode(self, column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
        """Per-row dictionary code (-1: null) and the parsed (hi, lo) of each distinct text."""
        arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        if pa.types.is_dictionary(arr.type):
            enc = arr
        else:
            if pa.types.is_large_string(arr.type):
                arr = arr.cast(pa.string())
            enc = pc.dictionary_encode(arr)
        codes = enc.indices.to_numpy(zero_copy_only=False)
        if enc.indices.null_count:
            codes = np.where(enc.indices.is_valid().to_numpy(zero_copy_only=False), codes, -1)
        pairs = parse_ips(enc.dictionary.to_pylist(), self._ip_cache)
        return np.asarray(codes, np.int64), pairs


def _int_column(table: pa.Table, name: str, n: int) -> np.ndarray:
    if name not in table.column_names:
        return np.zeros(n, np.uint64)
    col = table[name]
    if not pa.types.is_integer(col.type):
        return np.zeros(n, np.uint64)
    return np.asarray(col.fill_null(0).to_numpy(zero_copy_only=False)).astype(np.uint64, copy=False)


def _mac_column(table: pa.Table, name: str, n: int) -> np.ndarray:
    if name not in table.column_names:
        return np.zeros(n, np.uint64)
    col = table[name]
    if pa.types.is_integer(col.type):
        return _int_column(table, name, n)
    enc = pc.dictionary_encode(col.combine_chunks().cast(pa.string()))
    lut = np.asarray([mac_int(t) if t else 0 for t in enc.dictionary.to_pylist()] + [0], np.uint64)
    codes = enc.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    return lut[codes]


def _set_columns(table: pa.Table, out: dict[str, np.ndarray], stats: TaggingStats) -> pa.Table:
    matched_cols = [ID_FIELDS.index(f) for f in ("project", "host", "vm", "pod", "service")]
    for side in SIDES:
        ids = out[side]
        stats.sides_matched += int((ids[:, matched_cols] != 0).any(axis=1).sum())
        for j, f in enumerate(ID_FIELDS):
            name = f"{side}_{f}_id"
            values = ids[:, j]
            if name in table.column_names:
                old = np.asarray(table[name].fill_null(0).to_numpy(zero_copy_only=False)).astype(np.uint32)
                values = np.where(old != 0, old, values)
                table = table.set_column(table.column_names.index(name), name, pa.array(values, pa.uint32()))
            else:
                table = table.append_column(name, pa.array(values, pa.uint32()))
    return table

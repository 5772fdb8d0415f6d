"""Broker: copies of captured packets to tools (match, dedup, cap, fuse, build, send), with counters.

Called from a capture worker with each decoded batch (:meth:`Broker.process`), or wrapped around the
pipeline's packet filter (:meth:`Broker.tap`). Per batch: every rule gives a row mask; the masks of the rules
sending to a destination are merged (a packet goes once to a destination whatever the number of rules
matching it; the longest truncation and "strip" win); a per-destination deduplicator drops the second
copy of a packet seen on two ports (both VMs' taps, several mirror sessions) within
:data:`DEDUP_WINDOW_NS`; then the fuse, the build (one numba call), the token bucket and one ``sendmmsg``
per destination. :meth:`Broker.apply` swaps in a new section (at most one batch later) without a restart;
destinations whose name and settings are unchanged keep their socket, sequence numbers and dedup cache.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cloudtap.broker.bucket import TokenBucket
from cloudtap.broker.config import BrokerSection, Destination
from cloudtap.broker.encap import DestinationTable, build_copies
from cloudtap.broker.fuse import HostFuse
from cloudtap.broker.rules import CompiledRule, PointNames, frame_macs
from cloudtap.broker.sender import Sender
from cloudtap.capture.frames import FrameBatch
from cloudtap.decode.dedup import Deduplicator

log = logging.getLogger(__name__)
#: Two copies of a packet this close in time are one packet (the decoder's mirror dedup fingerprint).
DEDUP_WINDOW_NS = 50_000_000


@dataclass
class DestinationCounters:
    """Cumulative counters of one destination (kept across hot applies while the name stays)."""

    packets: int = 0
    bytes: int = 0  #: underlay bytes (outer IP/UDP headers included)
    drops_cap: int = 0
    drops_fuse: int = 0
    drops_error: int = 0
    truncated_mtu: int = 0
    last_error: str = ""

    def as_dict(self) -> dict[str, int]:
        return {"packets": self.packets, "bytes": self.bytes, "drops_cap": self.drops_cap,
                "drops_fuse": self.drops_fuse, "drops_error": self.drops_error,
                "truncated_mtu": self.truncated_mtu}  # fmt: skip


@dataclass
class _Lane:
    """A destination's running state."""

    dest: Destination
    sender: Sender | None
    bucket: TokenBucket
    dedup: Deduplicator
    counters: DestinationCounters
    open_error: str = ""


@dataclass
class _State:
    section: BrokerSection
    lanes: list[_Lane]
    table: DestinationTable
    rules: list[CompiledRule]
    matched: dict[str, int] = field(default_factory=dict)


class Broker:
    """The agent's packet broker. Thread-safe: workers call :meth:`process`, the controller :meth:`apply`."""

    def __init__(self, section: BrokerSection, points: PointNames, fuse: HostFuse | None = None) -> None:
        self.points = points
        self.fuse = fuse or HostFuse(section.fuse)
        self.dedup_skipped = 0
        self.errors = 0
        self.last_error = ""
        self._counters: dict[str, DestinationCounters] = {}
        self._matched: dict[str, int] = {}
        self._lock = threading.Lock()
        self._state = self._compile(section, [])

    # -- configuration ----------------------------------------------------------------------------------
    def apply(self, section: BrokerSection) -> None:
        """Use ``section`` from the next batch on (a bad rule raises ConfigError before anything changes)."""
        with self._lock:
            old = self._state
        new = self._compile(section, old.lanes)
        with self._lock:
            self._state = new
            self.fuse.configure(section.fuse)
        kept = {id(lane.sender) for lane in new.lanes}
        for lane in old.lanes:
            if lane.sender is not None and id(lane.sender) not in kept:
                lane.sender.close()

    def _compile(self, section: BrokerSection, old_lanes: list[_Lane]) -> _State:
        index = {d.name: i for i, d in enumerate(section.destinations)}
        rules = [CompiledRule(r, [index[d] for d in r.destinations]) for r in section.rules]
        reuse = {lane.dest.name: lane for lane in old_lanes}
        lanes: list[_Lane] = []
        for dest in section.destinations:
            counters = self._counters.setdefault(dest.name, DestinationCounters())
            prev = reuse.get(dest.name)
            if (
                prev is not None
                and _same_socket(prev.dest, dest)
                and (prev.sender is not None or not section.enabled)
            ):
                prev.bucket.reconfigure(dest.max_bps, dest.burst_bytes)
                lanes.append(_Lane(dest, prev.sender, prev.bucket, prev.dedup, counters, prev.open_error))
                continue
            sender, error = None, ""
            if section.enabled:
                try:
                    sender = Sender(dest)
                except OSError as exc:
                    error = f"cannot open a socket for {dest.name}: {exc}"
                    counters.last_error = error
                    log.warning("broker: %s", error)
            lanes.append(_Lane(dest, sender, TokenBucket(dest.max_bps, dest.burst_bytes),
                               Deduplicator(window_ns=DEDUP_WINDOW_NS), counters, error))  # fmt: skip
        table = DestinationTable(list(section.destinations))
        if old_lanes:  # GRE sequence numbers continue
            seq = {lane.dest.name: self._state.table.seq[j] for j, lane in enumerate(old_lanes)}
            table.seq[:] = [seq.get(d.name, 0) for d in section.destinations]
        for rule in section.rules:
            self._matched.setdefault(rule.name, 0)
        return _State(section, lanes, table, rules)

    # -- the hot path -----------------------------------------------------------------------------------
    def tap(self, previous: Any = None) -> Any:
        """A pipeline ``packet_filter``: runs ``previous`` (if any), forwards what it keeps, keeps it."""

        def packet_filter(frames: FrameBatch, packets: np.ndarray) -> np.ndarray:
            keep = previous(frames, packets) if previous is not None else np.ones(packets.shape[0], np.bool_)
            self.process(frames, packets if bool(keep.all()) else packets[keep])
            return keep

        return packet_filter

    def process(self, frames: FrameBatch, packets: np.ndarray) -> None:
        """Forward the copies ``packets`` (decoded rows of ``frames``) call for. Never raises."""
        state = self._state
        if not state.section.enabled or not state.rules or packets.shape[0] == 0:
            return
        try:
            with self._lock:
                self._process(self._state, frames, packets)
        except Exception as exc:  # noqa: BLE001 - forwarding must never stop capture and metering
            self.errors += 1
            if str(exc) != self.last_error:
                log.exception("broker: batch not forwarded")
            self.last_error = str(exc)

    def _process(self, state: _State, frames: FrameBatch, packets: np.ndarray) -> None:
        index = packets["frame_index"].astype(np.int64)
        dst_mac, src_mac = frame_macs(frames, index)
        k = len(state.lanes)
        selected = np.zeros((k, index.shape[0]), np.bool_)
        limit = np.zeros((k, index.shape[0]), np.int64)
        strip = np.zeros((k, index.shape[0]), np.bool_)
        for rule in state.rules:
            mask = rule.match(frames, index, dst_mac, src_mac, self.points)
            hits = int(np.count_nonzero(mask))
            self._matched[rule.name] = self._matched.get(rule.name, 0) + hits
            if not hits:
                continue
            for d in rule.dest_index.tolist():
                selected[d] |= mask
                np.maximum(limit[d], np.where(mask, rule.limit, 0), out=limit[d])
                if rule.strip:
                    strip[d] |= mask
        fuse_open = self.fuse.check()
        frame_parts, dest_parts, limit_parts, strip_parts = [], [], [], []
        for d, lane in enumerate(state.lanes):
            rows = np.flatnonzero(selected[d])
            if rows.shape[0] == 0:
                continue
            keep = lane.dedup.mask(frames, packets if rows.shape[0] == packets.shape[0] else packets[rows])
            self.dedup_skipped += int(rows.shape[0] - np.count_nonzero(keep))
            rows = rows[keep]
            if rows.shape[0] == 0:
                continue
            if fuse_open:
                lane.counters.drops_fuse += int(rows.shape[0])
                continue
            if lane.sender is None:
                lane.counters.drops_error += int(rows.shape[0])
                continue
            frame_parts.append(index[rows])
            dest_parts.append(np.full(rows.shape[0], d, np.int32))
            limit_parts.append(limit[d, rows])
            strip_parts.append(strip[d, rows])
        if not frame_parts:
            return
        copies = build_copies(frames, state.table, np.concatenate(frame_parts), np.concatenate(dest_parts),
                              np.concatenate(limit_parts).astype(np.int32), np.concatenate(strip_parts))  # fmt: skip
        start = 0
        for part in dest_parts:
            d = int(part[0])
            end = start + part.shape[0]
            lane = state.lanes[d]
            length = copies.length[start:end]
            wire = length.astype(np.int64) + state.table.outer[d]
            admitted = lane.bucket.admit(wire)
            lane.counters.drops_cap += part.shape[0] - admitted
            if admitted:
                assert lane.sender is not None
                result = lane.sender.send(
                    copies.buffer, copies.offset[start : start + admitted], length[:admitted]
                )
                c = lane.counters
                c.packets += result.sent
                c.bytes += int(wire[: result.sent].sum())
                c.truncated_mtu += int(np.count_nonzero(copies.mtu_cut[start : start + result.sent]))
                c.drops_error += result.failed
                if result.error:
                    c.last_error = result.error
            start = end

    # -- reporting --------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """The ``broker`` object of the agent's /status (docs/broker.md, "Counters")."""
        state = self._state
        self.fuse.check()
        names = [lane.dest.name for lane in state.lanes]
        return {
            "enabled": state.section.enabled,
            "fuse_open": self.fuse.open,
            "fuse_reason": self.fuse.reason,
            "destinations": {n: self._counters[n].as_dict() for n in names},
            "rules": {r.name: {"matched": self._matched.get(r.name, 0)} for r in state.rules},
            "dedup_skipped": self.dedup_skipped,
            "errors": {n: self._counters[n].last_error for n in names if self._counters[n].last_error},
        }

    def heartbeat(self) -> dict[str, Any]:
        """The heartbeat's broker keys (cumulative since the agent started, every destination ever used)."""
        per = {n: {"packets": c.packets, "bytes": c.bytes, "drops": c.drops_cap + c.drops_fuse + c.drops_error}
               for n, c in list(self._counters.items())}  # fmt: skip
        return {
            "forwarded_packets": sum(v["packets"] for v in per.values()),
            "forwarded_bytes": sum(v["bytes"] for v in per.values()),
            "forward_drops": sum(v["drops"] for v in per.values()),
            "broker_fuse_open": bool(self.fuse.open),
            "broker": per,
        }

    def close(self) -> None:
        """Close every socket."""
        with self._lock:
            for lane in self._state.lanes:
                if lane.sender is not None:
                    lane.sender.close()
                    lane.sender = None


def _same_socket(a: Destination, b: Destination) -> bool:
    """Whether ``b`` can keep ``a``'s socket, sequence numbers and dedup cache."""
    keys = ("encap", "address", "source", "port", "interface")
    return all(getattr(a, k) == getattr(b, k) for k in keys)

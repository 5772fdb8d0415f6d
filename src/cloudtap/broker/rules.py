"""Broker rules compiled into vectorised matchers over a batch (interfaces, MACs + direction, BPF).

A rule matches a decoded row when the row's capture interface (observation point) matches one of its
globs (by interface name or VM domain name), its Ethernet MACs agree with ``macs``/``direction``, and its
frame passes the rule's tcpdump filter (compiled by libpcap, run by the numba BPF VM; also tried inside
802.1Q tags, see :func:`cloudtap.capture.bpf.vlan_aware`). Only Ethernet frames are forwarded.
"""

from __future__ import annotations

import fnmatch
from typing import Protocol

import numpy as np

from cloudtap.broker import _encap_kernels as _k
from cloudtap.broker.config import Rule
from cloudtap.capture.bpf import FrameFilter, vlan_aware
from cloudtap.capture.frames import FrameBatch
from cloudtap.errors import ConfigError, FilterError

#: Rule truncation meaning "the whole frame" once compiled (0 in the config).
WHOLE = 1 << 30
_ETHERNET = 1


class PointNames(Protocol):
    """What the matcher needs of :class:`cloudtap.agent.identity.ObservationPoints`."""

    def all(self) -> list: ...  # type: ignore[type-arg]


def mac_int(text: str) -> int:
    """``aa:bb:..`` as an integer (the decoded rows' MAC encoding)."""
    return int(text.replace(":", ""), 16)


def frame_macs(frames: FrameBatch, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Destination and source MACs (uint64) of the Ethernet frames ``index`` (0 for other frames)."""
    n = int(index.shape[0])
    dst = np.empty(n, np.uint64)
    src = np.empty(n, np.uint64)
    _k.frame_macs(np.ascontiguousarray(frames.data), np.ascontiguousarray(frames.offset, np.int64),
                  np.ascontiguousarray(frames.cap_len, np.uint32), np.ascontiguousarray(frames.linktype, np.uint16),
                  np.ascontiguousarray(index, np.int64), dst, src)  # fmt: skip
    return dst, src


class CompiledRule:
    """One rule ready to match batches.

    Raises:
        ConfigError: the BPF expression does not compile (named with the rule).
    """

    def __init__(self, rule: Rule, dest_index: list[int]) -> None:
        self.rule = rule
        self.name = rule.name
        self.dest_index = np.array(dest_index, np.int32)
        self.limit = rule.truncate or WHOLE
        self.strip = rule.vlan == "strip"
        self.macs = np.array(sorted({mac_int(m) for m in rule.macs}), np.uint64)
        self.filter: FrameFilter | None = None
        if rule.bpf and rule.bpf.strip():
            try:
                self.filter = FrameFilter(vlan_aware(rule.bpf))
                self.filter.program(_ETHERNET)
            except FilterError as exc:
                raise ConfigError(f"broker rule {rule.name}: bpf: {exc}") from exc
        self._points_seen = -1
        self._iface_ok = np.zeros(0, np.bool_)

    def _interfaces(self, points: PointNames) -> np.ndarray:
        """``bool`` by point id: does the point match one of the globs (refreshed when points are added)."""
        known = points.all()
        if len(known) != self._points_seen:
            globs = self.rule.interfaces
            ok = [any(fnmatch.fnmatchcase(p.interface, g) or (p.domain and fnmatch.fnmatchcase(p.domain, g))
                      for g in globs) for p in known]  # fmt: skip
            self._iface_ok = np.array(ok + [False], np.bool_)
            self._points_seen = len(known)
        return self._iface_ok

    def match(
        self,
        frames: FrameBatch,
        index: np.ndarray,
        dst_mac: np.ndarray,
        src_mac: np.ndarray,
        points: PointNames,
    ) -> np.ndarray:
        """``bool`` per row: rows are given by their frame ``index`` and that frame's MACs."""
        iface_ok = self._interfaces(points)
        iface = frames.interface[index].astype(np.int64)
        mask = iface_ok[np.minimum(iface, iface_ok.shape[0] - 1)]
        mask &= frames.linktype[index] == _ETHERNET
        if self.macs.shape[0]:
            from_vm = np.isin(src_mac, self.macs)
            to_vm = np.isin(dst_mac, self.macs)
            direction = self.rule.direction
            mask &= (
                from_vm if direction == "from_vm" else to_vm if direction == "to_vm" else (from_vm | to_vm)
            )
        if self.filter is not None and mask.any():
            mask &= self.filter.mask(frames)[index]
        return np.asarray(mask, np.bool_)

"""Follow VM interfaces live over rtnetlink and tell which VM each one belongs to.

:class:`InterfaceWatcher` subscribes to the kernel's link multicast group (``RTNLGRP_LINK``, via
pyroute2 ``IPRoute.bind()``) and turns ``RTM_NEWLINK``/``RTM_DELLINK`` notifications for names that
match a pattern into ``added``/``removed``/``changed`` events, relative to the interfaces that existed
when the watcher was created. It waits in ``select()`` on the netlink socket (no busy loop) and reads
that socket directly, so :meth:`InterfaceWatcher.poll` may run in a thread other than the creator's.
A new interface is reported as soon as the kernel announces it (milliseconds; a burst is gathered
for at most 50 ms more so that e.g. link-down + delete become one event).

Floods are handled: each poll drains what is queued, coalesces several notifications of one
interface into one event (an interface added and removed within one poll yields nothing), and when
the kernel drops notifications because the socket buffer overflowed (``ENOBUFS``) the watcher
re-reads the full link table and reports the difference, so no addition or removal is lost.
Notifications of bridge ports (``AF_BRIDGE``, e.g. a tap leaving its Linux bridge) are not removals
and are ignored.

VM identity comes from libvirt domain XML (see :mod:`cloudtap.agent.libvirt`), re-scanned at most
every ``libvirt_refresh_s``; when a domain file appears after its tap (libvirt writes the live status
after creating the device), the interface is reported again as ``changed`` with its domain. OpenStack
hybrid-plug ports ``qvoXXXX``/``qvbXXXX`` take the identity of ``tapXXXX`` (same port-id suffix).

Guest MAC heuristic: libvirt gives a tap device the guest's MAC with the first octet replaced by
``fe`` (so the host bridge never adopts it), and OpenStack guest MACs start with ``fa:16:3e``. When
no domain XML names a ``tap*`` interface and its MAC starts with ``fe:``, the guest MAC is taken to be
the tap MAC with ``fe`` -> ``fa``. Other interfaces get no guessed guest MAC.
"""

from __future__ import annotations

import errno
import logging
import re
import select
import socket
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from cloudtap.agent.libvirt import DomainIndex
from cloudtap.errors import ConfigError

if TYPE_CHECKING:
    from pyroute2 import IPRoute

log = logging.getLogger(__name__)

DEFAULT_INTERFACE_PATTERN = r"^(tap|vnet|qvo|qvb|veth)[\w.-]*$"  # KVM/OpenStack VM ports
DEFAULT_LIBVIRT_DIRS = ("/run/libvirt/qemu", "/etc/libvirt/qemu")

EventKind = Literal["added", "removed", "changed"]

_NETNS_DIR = Path("/var/run/netns")  # where `ip netns add` puts named namespaces
_IFF_UP = 0x1
# linux/rtnetlink.h ABI constants (pyroute2 itself, ~20 MiB resident, loads only when a watcher opens)
RTM_NEWLINK, RTM_DELLINK = 16, 17
RTMGRP_LINK = 0x1
_AF_BRIDGE = 7
_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
_RECV_SIZE = 1 << 16
_MAX_DATAGRAMS_PER_POLL = 8192  # bounds one poll() under a sustained flood
_MIN_FORCED_REFRESH_S = 0.1
_SETTLE_QUIET_S = 0.005  # a burst is over after this long without a notification...
_SETTLE_MAX_S = 0.05  # ...or after this long in all (bounds the added latency)


@dataclass(frozen=True)
class VmInterface:
    """A host interface that (probably) carries one VM's traffic."""

    name: str
    ifindex: int
    mac: str  # host-side MAC of the interface ("" when it has none)
    vm_mac: str | None  # the guest's MAC (libvirt XML, else the OpenStack tap heuristic)
    domain: str | None  # libvirt domain name when known
    domain_uuid: str | None
    up: bool  # administratively up (IFF_UP)


@dataclass(frozen=True)
class InterfaceEvent:
    """One change of the set of watched interfaces."""

    kind: EventKind
    interface: VmInterface


def openstack_guest_mac(tap_mac: str) -> str | None:
    """Guest MAC of an OpenStack/libvirt tap from its host-side MAC (``fe:..`` -> ``fa:..``), else None."""
    mac = tap_mac.lower()
    return "fa" + mac[2:] if mac.startswith("fe:") and len(mac) == 17 else None


class _Batch:
    """Events of one poll, coalesced per interface name (order of first appearance kept)."""

    def __init__(self) -> None:
        self._events: list[InterfaceEvent | None] = []
        self._last: dict[str, int] = {}

    def add(self, kind: EventKind, iface: VmInterface) -> None:
        pos = self._last.get(iface.name)
        prev = self._events[pos] if pos is not None else None
        if prev is not None and pos is not None:
            if kind == "changed" and prev.kind in ("added", "changed"):
                self._events[pos] = InterfaceEvent(prev.kind, iface)
                return
            if kind == "removed" and prev.kind in ("added", "changed"):
                self._events[pos] = None
                del self._last[iface.name]
                if prev.kind == "added":
                    return  # appeared and vanished within one poll: nothing happened
        self._last[iface.name] = len(self._events)
        self._events.append(InterfaceEvent(kind, iface))

    def __bool__(self) -> bool:
        return any(e is not None for e in self._events)

    def events(self) -> list[InterfaceEvent]:
        return [e for e in self._events if e is not None]


class InterfaceWatcher:
    """Current VM interfaces and a live stream of their changes.

    One thread polls; :meth:`snapshot` and :meth:`close` may be called from others.

    Args:
        pattern: regular expression searched in interface names (anchor it); others are ignored.
        libvirt_dirs: libvirt domain XML directories, highest priority first.
        netns: name (or path) of the network namespace to watch; None for the agent's own.
        rcvbuf: netlink receive buffer (bytes) asked for; overflow is survived by a resync anyway.
        libvirt_refresh_s: minimum seconds between two periodic re-scans of ``libvirt_dirs``.

    Raises:
        ConfigError: the pattern is not a valid regular expression.
        OSError: the namespace does not exist or netlink is unavailable.
    """

    def __init__(
        self,
        pattern: str = DEFAULT_INTERFACE_PATTERN,
        libvirt_dirs: Sequence[str | Path] = DEFAULT_LIBVIRT_DIRS,
        netns: str | None = None,
        *,
        rcvbuf: int = 4 << 20,
        libvirt_refresh_s: float = 1.0,
    ) -> None:
        try:
            self._pattern = re.compile(pattern)
        except re.error as exc:
            raise ConfigError(f"interface pattern {pattern!r} is not a valid regex: {exc}") from exc
        self.netns = netns
        self.resyncs = 0  # full re-reads after the kernel dropped notifications
        self._libvirt = DomainIndex(libvirt_dirs)
        self._libvirt_refresh_s = libvirt_refresh_s
        self._libvirt_scanned = 0.0
        self._closed = False
        self._lock = threading.Lock()  # poll() may run in one thread while another snapshots or closes
        # subscribe before the first dump, so nothing between the dump and the first poll is missed
        self._events = self._open_iproute()
        try:
            self._events.bind(groups=RTMGRP_LINK)
            self._sock = self._events.asyncore.socket  # read directly: select()-able from any thread
            self._sock.setblocking(False)
            self._set_rcvbuf(rcvbuf)
            self._refresh_libvirt(force=True)
            self._known: dict[int, VmInterface] = self._dump()  # the baseline poll() reports against
            self._identified_version = self._libvirt.version
        except BaseException:
            self._events.close()
            raise

    # -- public API -------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, VmInterface]:
        """Re-read the link table; return the matching interfaces by name.

        A pure read: it neither consumes nor resets what :meth:`poll` reports.
        """
        with self._lock:
            self._check_open()
            self._libvirt_scanned = time.monotonic()
            self._libvirt.refresh()
            return {iface.name: iface for iface in self._dump().values()}

    def current(self) -> dict[str, VmInterface]:
        """The matching interfaces as of the last :meth:`poll` (no kernel round trip)."""
        with self._lock:
            return {iface.name: iface for iface in self._known.values()}

    def poll(self, timeout_s: float) -> list[InterfaceEvent]:
        """Wait up to ``timeout_s`` for changes of matching interfaces.

        Args:
            timeout_s: the longest wait (seconds); returns as soon as at least one event is ready.

        Returns:
            The events in kernel order, coalesced per interface (empty on timeout or after close).
        """
        self._check_open()
        deadline = time.monotonic() + max(0.0, timeout_s)
        batch = _Batch()
        while True:
            with self._lock:
                if self._closed:
                    break
                self._reidentify(batch, force=False)
                self._drain(batch)
                if batch:
                    self._settle(batch)
                    break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            # wake up at least every libvirt_refresh_s to notice domain files written late
            try:
                select.select([self._sock], [], [], min(remaining, self._libvirt_refresh_s))
            except (OSError, ValueError):
                if not self._closed:
                    raise  # else: closed by another thread meanwhile; the loop returns
        return batch.events()

    def close(self) -> None:
        """Release the netlink socket (idempotent; a poll() running in another thread returns)."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._events.close()

    def __enter__(self) -> InterfaceWatcher:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- internals --------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("InterfaceWatcher is closed")

    def _open_iproute(self) -> IPRoute:
        from pyroute2 import IPRoute

        if self.netns is None:
            return IPRoute()
        path = Path(self.netns) if "/" in self.netns else _NETNS_DIR / self.netns
        if not path.exists():  # checked here: pyroute2 leaks its helper resources when this fails
            raise FileNotFoundError(errno.ENOENT, "no such network namespace", str(path))
        return IPRoute(netns=self.netns, flags=0)  # flags=0: never create a missing namespace

    def _set_rcvbuf(self, size: int) -> None:
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, size)  # root: beyond rmem_max
        except OSError:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)

    def _dump(self) -> dict[int, VmInterface]:
        """Matching interfaces by ifindex, from a fresh link dump (its own short-lived socket)."""
        with self._open_iproute() as ipr:
            links = ipr.get_links()
        known = {}
        for msg in links:
            iface = self._from_msg(msg)
            if iface is not None:
                known[iface.ifindex] = iface
        return known

    def _from_msg(self, msg: Any, old: VmInterface | None = None) -> VmInterface | None:
        """The interface a link message describes, or None when its name does not match."""
        name = msg.get("IFLA_IFNAME") or (old.name if old else None)
        if not name or not self._pattern.search(name):
            return None
        mac = msg.get("IFLA_ADDRESS") or (old.mac if old else "")
        return self._identify(name, int(msg["index"]), mac, bool(msg["flags"] & _IFF_UP))

    def _identify(self, name: str, ifindex: int, mac: str, up: bool) -> VmInterface:
        mac = mac.lower()
        found = self._libvirt.lookup(name)
        if found is None and name[:3] in ("qvo", "qvb"):
            found = self._libvirt.lookup("tap" + name[3:])  # OpenStack hybrid plug: same port id
        if found is not None:
            domain, nic = found
            return VmInterface(name, ifindex, mac, nic.mac, domain.name, domain.uuid, up)
        vm_mac = openstack_guest_mac(mac) if name.startswith("tap") else None
        return VmInterface(name, ifindex, mac, vm_mac, None, None, up)

    def _refresh_libvirt(self, force: bool) -> bool:
        now = time.monotonic()
        min_gap = _MIN_FORCED_REFRESH_S if force else self._libvirt_refresh_s
        if now - self._libvirt_scanned < min_gap:
            return False
        self._libvirt_scanned = now
        return self._libvirt.refresh()

    def _reidentify(self, batch: _Batch, force: bool) -> None:
        """Re-scan libvirt if due; report interfaces whose VM identity changed."""
        self._refresh_libvirt(force)
        if self._libvirt.version == self._identified_version:
            return
        self._identified_version = self._libvirt.version
        for ifindex, old in list(self._known.items()):
            new = self._identify(old.name, old.ifindex, old.mac, old.up)
            if new != old:
                self._known[ifindex] = new
                batch.add("changed", new)

    def _settle(self, batch: _Batch) -> None:
        """Take in the rest of a burst (e.g. link down + delete) so it is coalesced into this poll."""
        deadline = time.monotonic() + _SETTLE_MAX_S
        while (remaining := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([self._sock], [], [], min(remaining, _SETTLE_QUIET_S))
            if not ready:
                return
            self._drain(batch)

    def _drain(self, batch: _Batch) -> None:
        """Read every queued notification into ``batch``; resync on overflow."""
        overflow = False
        for _ in range(_MAX_DATAGRAMS_PER_POLL):
            try:
                data = self._sock.recv(_RECV_SIZE)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                overflow = True  # the kernel dropped notifications: what is queued is incomplete
                continue
            if not overflow:
                self._apply(self._events.marshal.parse(data), batch)
        if overflow:
            self._resync(batch)
        elif any(e.kind == "added" and e.interface.domain is None for e in batch.events()):
            self._reidentify(batch, force=True)  # a new tap: its domain file may be new too

    def _apply(self, messages: Iterable[Any], batch: _Batch) -> None:
        for msg in messages:
            kind = msg["header"]["type"]
            if kind not in (RTM_NEWLINK, RTM_DELLINK) or msg.get("family") == _AF_BRIDGE:
                continue  # AF_BRIDGE: bridge-port notifications, not the device itself
            ifindex = int(msg["index"])
            old = self._known.get(ifindex)
            if kind == RTM_DELLINK:
                if old is not None:
                    del self._known[ifindex]
                    batch.add("removed", old)
                continue
            name = msg.get("IFLA_IFNAME")
            if old is not None and name and name != old.name:  # renamed
                del self._known[ifindex]
                batch.add("removed", old)
                old = None
            new = self._from_msg(msg, old)
            if new is None:
                continue
            self._known[ifindex] = new
            if old is None:
                batch.add("added", new)
            elif new != old:
                batch.add("changed", new)

    def _resync(self, batch: _Batch) -> None:
        """Replace the state by a fresh dump and report the difference."""
        self.resyncs += 1
        log.warning("netlink notifications were dropped (socket buffer overflow); re-reading all links")
        self._refresh_libvirt(force=True)
        self._identified_version = self._libvirt.version
        fresh = self._dump()
        for ifindex, gone in self._known.items():
            now = fresh.get(ifindex)
            if now is None or now.name != gone.name:
                batch.add("removed", gone)
        for ifindex, new in fresh.items():
            old = self._known.get(ifindex)
            if old is None or old.name != new.name:
                batch.add("added", new)
            elif new != old:
                batch.add("changed", new)
        self._known = fresh

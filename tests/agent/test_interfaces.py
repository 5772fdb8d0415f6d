"""InterfaceWatcher against real kernel interfaces (veth pairs in private network namespaces).

Every interface lives in a namespace created here (or, for the default-namespace test, is deleted
by a finalizer); names carry this process's pid so parallel test runs do not collide.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytest.importorskip("pyroute2")  # the agent extra

from cloudtap.agent.interfaces import (  # noqa: E402
    DEFAULT_INTERFACE_PATTERN,
    InterfaceEvent,
    InterfaceWatcher,
    VmInterface,
    openstack_guest_mac,
)
from cloudtap.errors import ConfigError  # noqa: E402

FIXTURES = Path(__file__).resolve().parent / "fixtures"
PID = f"{os.getpid():x}"
_seq = itertools.count()

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2 (netns, veth)"
)


def uniq(prefix: str) -> str:
    """A name unique to this process and call, within IFNAMSIZ."""
    name = f"{prefix}{PID}{next(_seq)}"
    assert len(name) <= 15, name
    return name


def ip(*args: str, ns: str | None = None, stdin: str | None = None) -> str:
    cmd = ["ip", *(["-n", ns] if ns else []), *args]
    res = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, f"{' '.join(cmd)}: {res.stderr}"
    return res.stdout


def link(name: str, ns: str | None = None) -> dict:
    return json.loads(ip("-j", "link", "show", "dev", name, ns=ns))[0]


def veth(name: str, peer: str, ns: str | None, peer_ns: str, mac: str | None = None) -> None:
    """veth ``name`` in ``ns`` (None: ours) whose peer lives in ``peer_ns`` (the 'guest')."""
    addr = ["address", mac] if mac else []
    ip("link", "add", name, *addr, "type", "veth", "peer", "name", peer, "netns", peer_ns, ns=ns)


@pytest.fixture
def make_netns() -> Iterator[Callable[[], str]]:
    """Factory of private network namespaces, all deleted (with their interfaces) afterwards."""
    created: list[str] = []

    def make() -> str:
        name = f"ctns{PID}-{next(_seq)}"
        res = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
        if res.returncode != 0:
            pytest.skip(f"no network namespace support: {res.stderr.strip()}")
        created.append(name)
        return name

    yield make
    for name in reversed(created):
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


@pytest.fixture
def host_guest(make_netns: Callable[[], str]) -> tuple[str, str]:
    """(host namespace the watcher watches, guest namespace holding the veth peers)."""
    return make_netns(), make_netns()


@pytest.fixture
def libvirt_dir(tmp_path: Path) -> Path:
    path = tmp_path / "libvirt"
    path.mkdir()
    return path


def collect(watcher: InterfaceWatcher, until: Callable[[list[InterfaceEvent]], bool], timeout_s: float = 3.0):
    """Poll until ``until(events so far)`` or the timeout; returns all events."""
    events: list[InterfaceEvent] = []
    deadline = time.monotonic() + timeout_s
    while not until(events) and time.monotonic() < deadline:
        events += watcher.poll(0.1)
    return events


def has(kind: str, name: str) -> Callable[[list[InterfaceEvent]], bool]:
    return lambda evs: any(e.kind == kind and e.interface.name == name for e in evs)


# -- pure helpers -------------------------------------------------------------------------------


def test_openstack_guest_mac_heuristic() -> None:
    assert openstack_guest_mac("fe:16:3e:5d:21:8c") == "fa:16:3e:5d:21:8c"
    assert openstack_guest_mac("FE:16:3E:5D:21:8C") == "fa:16:3e:5d:21:8c"
    assert openstack_guest_mac("52:54:00:6b:3c:58") is None
    assert openstack_guest_mac("") is None


def test_default_pattern() -> None:
    pat = re.compile(DEFAULT_INTERFACE_PATTERN)
    for name in ("tap3f2a9c1e-7b", "vnet0", "qvo3f2a9c1e-7b", "qvb3f2a9c1e-7b", "veth1a2b.10"):
        assert pat.search(name), name
    for name in ("eth0", "br-int", "virbr0", "lo", "qbr3f2a9c1e-7b", "xtap0"):
        assert not pat.search(name), name


def test_invalid_pattern_is_config_error() -> None:
    with pytest.raises(ConfigError, match="not a valid regex"):
        InterfaceWatcher(pattern="tap(", libvirt_dirs=[])


# -- against the kernel ---------------------------------------------------------------------------


@needs_root
def test_snapshot_lists_exactly_matching(host_guest: tuple[str, str], libvirt_dir: Path) -> None:
    host, guest = host_guest
    tap_a, tap_b, vnet, other = uniq("tapct"), uniq("tapct"), uniq("vnetct"), uniq("ctother")
    veth(tap_a, uniq("ctp"), host, guest, mac="fe:16:3e:12:34:56")
    veth(tap_b, uniq("ctp"), host, guest, mac="02:00:00:00:0b:01")
    veth(vnet, uniq("ctp"), host, guest, mac="fe:54:00:aa:bb:cc")
    veth(other, uniq("ctp"), host, guest)
    ip("link", "set", tap_a, "up", ns=host)

    with InterfaceWatcher(libvirt_dirs=[libvirt_dir], netns=host) as watcher:
        snap = watcher.snapshot()

    assert set(snap) == {tap_a, tap_b, vnet}  # not ctother, not lo, not the peers in the guest
    for name, iface in snap.items():
        kernel = link(name, host)
        assert iface.name == name
        assert iface.ifindex == kernel["ifindex"]
        assert iface.mac == kernel["address"]
        assert iface.up == ("UP" in kernel["flags"])
        assert iface.domain is None and iface.domain_uuid is None
    assert snap[tap_a].up and not snap[tap_b].up
    assert snap[tap_a].vm_mac == "fa:16:3e:12:34:56"  # OpenStack tap heuristic
    assert snap[tap_b].vm_mac is None  # no fe: prefix
    assert snap[vnet].vm_mac is None  # heuristic is for tap* only


@needs_root
def test_snapshot_in_own_namespace(make_netns: Callable[[], str], libvirt_dir: Path) -> None:
    guest = make_netns()
    tap, other = uniq("tapct"), uniq("ctother")
    try:
        veth(tap, uniq("ctp"), None, guest)
        veth(other, uniq("ctp"), None, guest)
        with InterfaceWatcher(libvirt_dirs=[libvirt_dir]) as watcher:
            snap = watcher.snapshot()
            kernel = link(tap)
            assert snap[tap].ifindex == kernel["ifindex"] and snap[tap].mac == kernel["address"]
            assert other not in snap
            pattern = re.compile(DEFAULT_INTERFACE_PATTERN)
            assert all(pattern.search(name) for name in snap)  # other engineers' taps may be listed too
            ip("link", "del", tap)
            events = collect(watcher, has("removed", tap))
            assert [e.kind for e in events if e.interface.name == tap] == ["removed"]
    finally:
        for name in (tap, other):
            subprocess.run(["ip", "link", "del", name], capture_output=True)


@needs_root
def test_live_add_remove_latency(host_guest: tuple[str, str], libvirt_dir: Path, record_property) -> None:
    """A watcher polling in its own thread reports a new interface, a state change and a deletion < 1 s."""
    host, guest = host_guest
    watcher = InterfaceWatcher(libvirt_dirs=[libvirt_dir], netns=host)
    seen: queue.Queue[tuple[float, InterfaceEvent]] = queue.Queue()
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            for event in watcher.poll(0.2):
                seen.put((time.monotonic(), event))

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    all_events: list[InterfaceEvent] = []

    def wait_for(kind: str, name: str, since: float) -> float:
        deadline = since + 3.0
        while time.monotonic() < deadline:
            try:
                at, event = seen.get(timeout=0.05)
            except queue.Empty:
                continue
            all_events.append(event)
            if event.kind == kind and event.interface.name == name:
                return at - since
        pytest.fail(f"no {kind} event for {name}: {all_events}")

    try:
        time.sleep(0.1)  # the loop is running
        tap, other = uniq("tapct"), uniq("ctother")
        veth(other, uniq("ctp"), host, guest)  # ignored
        t0 = time.monotonic()
        veth(tap, uniq("ctp"), host, guest)
        added = wait_for("added", tap, t0)
        t0 = time.monotonic()
        ip("link", "set", tap, "up", ns=host)
        changed = wait_for("changed", tap, t0)
        t0 = time.monotonic()
        ip("link", "del", tap, ns=host)
        removed = wait_for("removed", tap, t0)
    finally:
        stop.set()
        thread.join(timeout=5)
        watcher.close()

    record_property("latency_added_s", round(added, 4))
    record_property("latency_removed_s", round(removed, 4))
    assert added < 1.0 and changed < 1.0 and removed < 1.0, (added, changed, removed)
    assert not thread.is_alive()
    assert all(e.interface.name != other for e in all_events)
    mine = [e for e in all_events if e.interface.name == tap]
    # the kernel takes a link down before deleting it: that may show as one more "changed"
    assert [e.kind for e in mine][:2] == ["added", "changed"] and mine[-1].kind == "removed", mine
    assert {e.kind for e in mine[2:-1]} <= {"changed"}
    assert not mine[0].interface.up and mine[1].interface.up
    assert mine[0].interface.ifindex == mine[2].interface.ifindex


@needs_root
def test_snapshot_does_not_consume_poll_events(host_guest: tuple[str, str], libvirt_dir: Path) -> None:
    host, guest = host_guest
    tap = uniq("tapct")
    with InterfaceWatcher(libvirt_dirs=[libvirt_dir], netns=host) as watcher:
        assert watcher.current() == {}
        veth(tap, uniq("ctp"), host, guest)
        snap = watcher.snapshot()
        assert set(snap) == {tap} and watcher.current() == {}
        events = collect(watcher, has("added", tap))
        assert events == [InterfaceEvent("added", snap[tap])]
        assert watcher.current() == snap


@needs_root
def test_bridge_detach_is_not_removal_and_rename_is(host_guest: tuple[str, str], libvirt_dir: Path) -> None:
    host, guest = host_guest
    tap, bridge, renamed = uniq("tapct"), uniq("ctbr"), uniq("ctother")
    ip("link", "add", bridge, "type", "bridge", ns=host)
    veth(tap, uniq("ctp"), host, guest)
    with InterfaceWatcher(libvirt_dirs=[libvirt_dir], netns=host) as watcher:
        ip("link", "set", tap, "master", bridge, ns=host)
        ip("link", "set", tap, "nomaster", ns=host)  # kernel sends an AF_BRIDGE RTM_DELLINK
        events = collect(watcher, lambda evs: False, timeout_s=0.4)
        assert not [e for e in events if e.kind != "changed"], events
        assert tap in watcher.snapshot()

        ifindex = link(tap, host)["ifindex"]
        ip("link", "set", tap, "name", renamed, ns=host)
        events = collect(watcher, has("removed", tap))
        assert [(e.kind, e.interface.name) for e in events] == [("removed", tap)]
        tap2 = uniq("tapct")
        ip("link", "set", renamed, "name", tap2, ns=host)
        events = collect(watcher, has("added", tap2))
        assert [(e.kind, e.interface.name, e.interface.ifindex) for e in events] == [("added", tap2, ifindex)]


@needs_root
@pytest.mark.parametrize("rcvbuf", [4 << 20, 4096], ids=["roomy", "overflowing"])
def test_flood_is_reported_completely(
    host_guest: tuple[str, str], libvirt_dir: Path, rcvbuf: int, record_property
) -> None:
    """100 veth pairs at once: every addition and removal is reported once, even after ENOBUFS."""
    host, _ = host_guest
    names = [f"tapct{PID}f{i}" for i in range(100)]
    with InterfaceWatcher(libvirt_dirs=[libvirt_dir], netns=host, rcvbuf=rcvbuf) as watcher:
        t0 = time.monotonic()
        ip(
            "-batch",
            "-",
            ns=host,
            stdin="".join(f"link add {n} type veth peer name ctp{n[5:]}\n" for n in names),
        )
        added = collect(watcher, lambda evs: {e.interface.name for e in evs} >= set(names), timeout_s=10)
        record_property(f"flood_add_{len(names)}_s", round(time.monotonic() - t0, 3))
        ip("-batch", "-", ns=host, stdin="".join(f"link del {n}\n" for n in names))
        removed = collect(watcher, lambda evs: {e.interface.name for e in evs} >= set(names), timeout_s=10)
        resyncs = watcher.resyncs
    assert sorted(e.interface.name for e in added if e.kind == "added") == sorted(names)
    assert sorted(e.interface.name for e in removed if e.kind == "removed") == sorted(names)
    assert all(e.kind != "removed" for e in added) and all(e.kind != "added" for e in removed)
    if rcvbuf == 4096:
        assert resyncs >= 1  # the kernel dropped notifications and the watcher re-read the table
    else:
        assert resyncs == 0


def _write_domain(libvirt_dir: Path, fixture: str, renames: dict[str, str]) -> None:
    text = (FIXTURES / fixture).read_text()
    for old, new in renames.items():
        assert old in text
        text = text.replace(old, new)
    tmp = libvirt_dir / f".{fixture}.new"
    tmp.write_text(text)
    tmp.rename(libvirt_dir / fixture)  # libvirt rewrites its files atomically too


@needs_root
def test_libvirt_identity(host_guest: tuple[str, str], libvirt_dir: Path) -> None:
    """A tap named in a domain's XML gets the domain, uuid and guest MAC; its qvo twin too."""
    host, guest = host_guest
    port = f"ct{PID}{next(_seq)}"  # stands for the OpenStack port-id prefix
    tap, qvo, stray = f"tap{port}", f"qvo{port}", uniq("tapct")
    _write_domain(libvirt_dir, "instance-0000002a.xml", {"tap3f2a9c1e-7b": tap})
    veth(tap, uniq("ctp"), host, guest, mac="fe:16:3e:5d:21:8c")  # what libvirt gives the tap
    ip("link", "add", qvo, "type", "veth", "peer", "name", f"qvb{port}", ns=host)
    veth(stray, uniq("ctp"), host, guest, mac="fe:16:3e:00:00:07")

    with InterfaceWatcher(libvirt_dirs=[libvirt_dir], netns=host) as watcher:
        snap = watcher.snapshot()
    expected = VmInterface(
        name=tap,
        ifindex=link(tap, host)["ifindex"],
        mac="fe:16:3e:5d:21:8c",
        vm_mac="fa:16:3e:5d:21:8c",
        domain="instance-0000002a",
        domain_uuid="7d3e9c2a-41f6-4b8e-9a0d-2c5f8e1b6a93",
        up=False,
    )
    assert snap[tap] == expected
    for twin in (qvo, f"qvb{port}"):
        assert (snap[twin].domain, snap[twin].domain_uuid, snap[twin].vm_mac) == (
            expected.domain,
            expected.domain_uuid,
            expected.vm_mac,
        )
    assert (snap[stray].domain, snap[stray].vm_mac) == (None, "fa:16:3e:00:00:07")


@needs_root
def test_domain_file_written_after_tap_reports_changed(
    host_guest: tuple[str, str], libvirt_dir: Path
) -> None:
    host, guest = host_guest
    tap = uniq("vnetct")
    with InterfaceWatcher(libvirt_dirs=[libvirt_dir], netns=host, libvirt_refresh_s=0.2) as watcher:
        veth(tap, uniq("ctp"), host, guest)
        events = collect(watcher, has("added", tap))
        assert [e.kind for e in events] == ["added"] and events[0].interface.domain is None
        _write_domain(libvirt_dir, "web01.xml", {"'vnet0'": f"'{tap}'"})
        t0 = time.monotonic()
        assert watcher.snapshot()[tap].domain == "web01"  # re-reads libvirt, consumes no event
        assert watcher.current()[tap].domain is None  # poll() has not told yet
        events = collect(watcher, has("changed", tap))
        elapsed = time.monotonic() - t0
        assert watcher.current()[tap].domain == "web01"
    (event,) = events
    assert (event.interface.domain, event.interface.vm_mac) == ("web01", "52:54:00:6b:3c:58")
    assert elapsed < 1.0


@needs_root
def test_missing_namespace_and_closed_watcher(libvirt_dir: Path) -> None:
    with pytest.raises(OSError):
        InterfaceWatcher(libvirt_dirs=[libvirt_dir], netns=f"ctns{PID}-absent")
    assert not Path(f"/run/netns/ctns{PID}-absent").exists()  # not created as a side effect
    watcher = InterfaceWatcher(libvirt_dirs=[libvirt_dir], libvirt_refresh_s=0.2)
    result: list[list[InterfaceEvent]] = []
    thread = threading.Thread(target=lambda: result.append(watcher.poll(10.0)))
    thread.start()
    time.sleep(0.1)
    t0 = time.monotonic()
    watcher.close()  # from another thread: the blocked poll returns
    thread.join(timeout=5)
    assert not thread.is_alive() and result == [[]]
    assert time.monotonic() - t0 < 1.0
    watcher.close()
    with pytest.raises(RuntimeError):
        watcher.poll(0.0)
    with pytest.raises(RuntimeError):
        watcher.snapshot()

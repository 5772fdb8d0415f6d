"""Put the agent in a cgroup with the user's CPU and memory grant (best effort, never fatal).

Order of attempts:

1. cgroup v2 (a ``cgroup2`` mount whose cgroup of this process offers ``cpu``/``memory``): a child
   ``<own cgroup>/<name>`` with ``cpu.max = "<quota> <period>"`` and ``memory.max``. When the own
   cgroup still holds processes (v2 forbids controllers on a cgroup with processes), the process is
   moved into the child first if it is the only one there.
2. cgroup v1 (separate ``cpu`` / ``memory`` hierarchies): ``<own cgroup>/<name>`` in each, with
   ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` and ``memory.limit_in_bytes``.
3. Nothing writable: ``CgroupResult(applied=False, reason=...)``; the agent self-throttles
   (:class:`cloudtap.agent.guard.CpuGovernor`, :class:`cloudtap.agent.guard.RssWatch`).

New cgroups are always nested under the process's current cgroup, so limits set by the service
manager (systemd ``MemoryMax=``...) still apply on top. :func:`remove_cgroup` moves the process back
and deletes what :func:`apply_cgroup` created.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from cloudtap.agent.config import LimitsSection

log = logging.getLogger(__name__)

CPU_PERIOD_US = 100_000  #: CFS period used for the quota
MIN_CPU_QUOTA_US = 1_000  #: the kernel refuses quotas below 1 ms


@dataclass
class CgroupResult:
    """What :func:`apply_cgroup` did.

    Attributes:
        applied: at least one limit (CPU or memory) is enforced by the kernel.
        reason: a human summary (what was applied, or why nothing could be).
        version: 2, 1, or 0 when nothing was applied.
        pid: the process that was moved.
        cpu_applied / memory_applied: which limit took effect.
        cpu_quota_us / cpu_period_us / memory_max_bytes: the values written.
        paths: the cgroup directories the process is now in (one per v1 hierarchy, one for v2).
        created: directories created (removed by :func:`remove_cgroup`).
        previous: directory the process came from, per path in ``paths``.
        enabled_controllers: v2 controllers enabled in a parent's ``cgroup.subtree_control``.
    """

    applied: bool
    reason: str
    version: int = 0
    pid: int = 0
    cpu_applied: bool = False
    memory_applied: bool = False
    cpu_quota_us: int = 0
    cpu_period_us: int = CPU_PERIOD_US
    memory_max_bytes: int = 0
    paths: list[Path] = field(default_factory=list)
    created: list[Path] = field(default_factory=list)
    previous: dict[Path, Path] = field(default_factory=dict)
    enabled_controllers: dict[Path, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class _Mount:
    fstype: str  # "cgroup" or "cgroup2"
    point: Path
    root: str  # hierarchy path mounted at ``point``
    controllers: frozenset[str]


def cpu_quota_us(max_cpu_cores: float, period_us: int = CPU_PERIOD_US) -> int:
    """CFS quota (µs per period) for a grant of ``max_cpu_cores``."""
    return max(MIN_CPU_QUOTA_US, round(max_cpu_cores * period_us))


def _parse_mountinfo(text: str) -> list[_Mount]:
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        lf, rf = left.split(), right.split()
        if len(lf) < 5 or len(rf) < 3 or rf[0] not in ("cgroup", "cgroup2"):
            continue
        point = Path(lf[4].replace("\\040", " "))
        opts = set(rf[2].split(",")) | set(lf[5].split(",") if len(lf) > 5 else [])
        ctrls = (
            frozenset(o for o in opts if o in ("cpu", "memory", "cpuacct"))
            if rf[0] == "cgroup"
            else frozenset()
        )
        mounts.append(_Mount(rf[0], point, lf[3], ctrls))
    return mounts


def _parse_proc_cgroup(text: str) -> dict[str, str]:
    """Map controller ("" for v2) -> cgroup path of the process."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, ctrls, path = parts
        if ctrls == "":
            out[""] = path
        for c in ctrls.split(","):
            if c:
                out[c] = path
    return out


def _dir_of(mount: _Mount, cg_path: str) -> Path | None:
    root = mount.root.rstrip("/")
    if root and root != "/" and not (cg_path == root or cg_path.startswith(root + "/")):
        return None  # the process's cgroup is not visible under this mount
    rel = cg_path[len(root) :] if root not in ("", "/") else cg_path
    return mount.point / rel.lstrip("/")


def _write(path: Path, value: str) -> None:
    with open(path, "w", encoding="ascii") as fh:
        fh.write(value)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="ascii").strip()
    except OSError:
        return ""


def _err(exc: OSError) -> str:
    return f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": ")


def _mkdir(path: Path, created: list[Path]) -> None:
    try:
        path.mkdir()
        created.append(path)
    except FileExistsError:
        pass


def _move(pid: int, directory: Path) -> None:
    _write(directory / "cgroup.procs", str(pid))


def _own_pids(directory: Path) -> set[int]:
    return {int(x) for x in _read(directory / "cgroup.procs").split()}


def apply_cgroup(
    limits: LimitsSection,
    name: str = "cloudtap-agent",
    *,
    pid: int | None = None,
    mountinfo: str | None = None,
    proc_cgroup: str | None = None,
) -> CgroupResult:
    """Move ``pid`` (default: this process) into a cgroup limited to the grant; never raises.

    Args:
        limits: ``max_cpu_cores`` becomes the CFS quota, ``max_memory_mib`` the memory limit;
            ``use_cgroup=False`` skips everything.
        name: the cgroup's directory name (created under the process's current cgroup).
        pid: the process to move (all its threads move with it).
        mountinfo / proc_cgroup: text of ``/proc/self/mountinfo`` and ``/proc/<pid>/cgroup``
            (tests inject fakes; default: read them).

    Returns:
        What was applied, or why not (``applied=False``: the agent must self-throttle).
    """
    pid = os.getpid() if pid is None else pid
    if not limits.use_cgroup:
        return CgroupResult(False, "disabled by limits.use_cgroup", pid=pid)
    try:
        mounts = _parse_mountinfo(
            mountinfo if mountinfo is not None else Path("/proc/self/mountinfo").read_text()
        )
        paths = _parse_proc_cgroup(
            proc_cgroup if proc_cgroup is not None else Path(f"/proc/{pid}/cgroup").read_text()
        )
    except OSError as exc:
        return CgroupResult(False, f"cannot read cgroup mounts: {_err(exc)}", pid=pid)
    quota = cpu_quota_us(limits.max_cpu_cores)
    mem = limits.max_memory_mib << 20
    notes: list[str] = []
    v2 = next((m for m in mounts if m.fstype == "cgroup2"), None)
    if v2 is not None and "" in paths:
        result = _apply_v2(v2, paths[""], name, pid, quota, mem, notes)
        if result is not None:
            return result
    elif v2 is None:
        notes.append("no cgroup v2 mount")
    v1_notes: list[str] = []
    result = _apply_v1(mounts, paths, name, pid, quota, mem, v1_notes)
    if result is not None:
        return result
    reason = "; ".join(notes + v1_notes) or "no cgroup controller found"
    return CgroupResult(False, f"no writable cpu/memory cgroup ({reason}); self-throttling", pid=pid)


def _apply_v2(
    mount: _Mount, cg_path: str, name: str, pid: int, quota: int, mem: int, notes: list[str]
) -> CgroupResult | None:
    current = _dir_of(mount, cg_path)
    if current is None or not current.is_dir():
        notes.append(f"cgroup v2: own cgroup {cg_path} not visible under {mount.point}")
        return None
    inside = current.name == name  # already inside (restart): set limits in place
    own = current.parent if inside else current
    available = set(_read(own / "cgroup.controllers").split()) & {"cpu", "memory"}
    if not available:
        notes.append(f"cgroup v2 at {mount.point}: cpu/memory controllers not available (bound to v1?)")
        return None
    res = CgroupResult(False, "", version=2, pid=pid, cpu_quota_us=quota, memory_max_bytes=mem)
    target = own / name
    res.paths.append(target)
    if not inside:
        res.previous[target] = own
    try:
        _mkdir(target, res.created)
        enabled = set(_read(own / "cgroup.subtree_control").split())
        missing = [c for c in sorted(available) if c not in enabled]
        moved = inside
        if missing:
            try:
                _write(own / "cgroup.subtree_control", " ".join(f"+{c}" for c in missing))
            except OSError as exc:
                # EBUSY: own still holds processes; fine if this one is alone there: move it first.
                if exc.errno != errno.EBUSY or _own_pids(own) - {pid}:
                    raise
                _move(pid, target)
                moved = True
                _write(own / "cgroup.subtree_control", " ".join(f"+{c}" for c in missing))
            res.enabled_controllers[own] = missing
        if "cpu" in available:
            _write(target / "cpu.max", f"{quota} {CPU_PERIOD_US}")
            res.cpu_applied = True
        if "memory" in available:
            _write(target / "memory.max", str(mem))
            res.memory_applied = True
        if not moved:
            _move(pid, target)
    except OSError as exc:
        notes.append(f"cgroup v2 at {own}: {_err(exc)}")
        remove_cgroup(res)
        return None
    res.applied = True
    parts = ([f"cpu.max {quota} {CPU_PERIOD_US}"] if res.cpu_applied else []) + (
        [f"memory.max {mem >> 20} MiB"] if res.memory_applied else []
    )
    res.reason = f"cgroup v2 {target}: " + ", ".join(parts)
    return res


def _apply_v1(
    mounts: list[_Mount], paths: dict[str, str], name: str, pid: int, quota: int, mem: int, notes: list[str]
) -> CgroupResult | None:
    res = CgroupResult(False, "", version=1, pid=pid, cpu_quota_us=quota, memory_max_bytes=mem)
    done: list[str] = []
    for ctrl in ("cpu", "memory"):
        mount = next((m for m in mounts if m.fstype == "cgroup" and ctrl in m.controllers), None)
        if mount is None or ctrl not in paths:
            notes.append(f"cgroup v1: no {ctrl} hierarchy")
            continue
        own = _dir_of(mount, paths[ctrl])
        if own is None or not own.is_dir():
            notes.append(f"cgroup v1 {ctrl}: own cgroup {paths[ctrl]} not visible under {mount.point}")
            continue
        inside = own.name == name
        target = own if inside else own / name
        created: list[Path] = []
        try:
            if not inside:
                _mkdir(target, created)
            if ctrl == "cpu":
                _write(target / "cpu.cfs_period_us", str(CPU_PERIOD_US))
                _write(target / "cpu.cfs_quota_us", str(quota))
                res.cpu_applied = True
                done.append(f"cpu.cfs_quota_us {quota}/{CPU_PERIOD_US}")
            else:
                _write(target / "memory.limit_in_bytes", str(mem))
                res.memory_applied = True
                done.append(f"memory.limit_in_bytes {mem >> 20} MiB")
            if not inside:
                _move(pid, target)
                res.previous[target] = own
            if target not in res.paths:
                res.paths.append(target)
            res.created.extend(created)
        except OSError as exc:
            notes.append(f"cgroup v1 {ctrl} at {target}: {_err(exc)}")
            if ctrl == "cpu":
                res.cpu_applied = False
            else:
                res.memory_applied = False
            for path in reversed(created):
                _rmdir(path)
    if not (res.cpu_applied or res.memory_applied):
        return None
    res.applied = True
    where = ", ".join(str(p) for p in res.paths)
    res.reason = (
        f"cgroup v1 {where}: " + ", ".join(done) + (f" (not applied: {'; '.join(notes)})" if notes else "")
    )
    return res


def _rmdir(path: Path, timeout_s: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            path.rmdir()
            return True
        except FileNotFoundError:
            return True
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                log.warning("cannot remove cgroup %s: %s", path, _err(exc))
                return False
            time.sleep(0.02)  # the last member is still exiting


def remove_cgroup(result: CgroupResult, timeout_s: float = 2.0) -> bool:
    """Undo :func:`apply_cgroup`: move the process back (if alive and inside) and delete created dirs.

    Args:
        result: what :func:`apply_cgroup` returned.
        timeout_s: how long to wait for exiting members before giving up on a directory.

    Returns:
        True when every created directory is gone. Never raises.
    """
    for path in result.paths:
        prev = result.previous.get(path)
        if prev is None or result.pid not in _own_pids(path):
            continue
        try:
            if result.version == 2 and prev in result.enabled_controllers:
                ctrls = result.enabled_controllers.pop(prev)
                _write(prev / "cgroup.subtree_control", " ".join(f"-{c}" for c in ctrls))
            _move(result.pid, prev)
        except OSError as exc:
            log.warning("cannot move pid %d back to %s: %s", result.pid, prev, _err(exc))
    ok = True
    for path in reversed(result.created):
        ok = _rmdir(path, timeout_s) and ok
    for parent, ctrls in list(result.enabled_controllers.items()):
        try:
            _write(parent / "cgroup.subtree_control", " ".join(f"-{c}" for c in ctrls))
        except OSError:
            pass  # another child uses them: leave enabled
        result.enabled_controllers.pop(parent, None)
    return ok


def cgroup_limits(pid: int | None = None) -> dict[str, int | str]:
    """The CPU quota and memory limit the kernel enforces on ``pid`` now (for status and tests).

    Returns:
        ``{"version", "cpu_quota_us", "cpu_period_us", "memory_max_bytes", "memory_peak_bytes",
        "memory_limit_hits"}``; -1 means unlimited or unknown.
    """
    pid = os.getpid() if pid is None else pid
    out: dict[str, int | str] = {
        "version": 0,
        "cpu_quota_us": -1,
        "cpu_period_us": -1,
        "memory_max_bytes": -1,
        "memory_peak_bytes": -1,
        "memory_limit_hits": -1,
    }
    try:
        mounts = _parse_mountinfo(Path("/proc/self/mountinfo").read_text())
        paths = _parse_proc_cgroup(Path(f"/proc/{pid}/cgroup").read_text())
    except OSError:
        return out

    def num(text: str) -> int:
        return int(text) if text.lstrip("-").isdigit() else -1

    for m in mounts:
        if m.fstype == "cgroup" and "cpu" in m.controllers and "cpu" in paths:
            d = _dir_of(m, paths["cpu"])
            if d is not None and (d / "cpu.cfs_quota_us").exists():
                out.update(version=1, cpu_quota_us=num(_read(d / "cpu.cfs_quota_us")))
                out["cpu_period_us"] = num(_read(d / "cpu.cfs_period_us"))
        if m.fstype == "cgroup" and "memory" in m.controllers and "memory" in paths:
            d = _dir_of(m, paths["memory"])
            if d is not None and (d / "memory.limit_in_bytes").exists():
                out.update(version=1, memory_max_bytes=num(_read(d / "memory.limit_in_bytes")))
                out["memory_peak_bytes"] = num(_read(d / "memory.max_usage_in_bytes"))
                out["memory_limit_hits"] = num(_read(d / "memory.failcnt"))
    v2 = next((m for m in mounts if m.fstype == "cgroup2"), None)
    d = _dir_of(v2, paths[""]) if v2 is not None and "" in paths else None
    if d is not None:
        cpu_max = _read(d / "cpu.max").split()
        if len(cpu_max) == 2:
            out.update(version=2, cpu_quota_us=num(cpu_max[0]), cpu_period_us=num(cpu_max[1]))
        if (d / "memory.max").exists():
            out.update(version=2, memory_max_bytes=num(_read(d / "memory.max")))
            out["memory_peak_bytes"] = num(_read(d / "memory.peak"))
            events = dict(line.split() for line in _read(d / "memory.events").splitlines() if " " in line)
            out["memory_limit_hits"] = num(events.get("max", "-1"))
    return out

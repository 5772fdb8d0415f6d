"""Cgroup limits: the v1/v2 logic on fake trees, and once for real in a child process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cloudtap.agent import cgroup
from cloudtap.agent.cgroup import CgroupResult, apply_cgroup, cpu_quota_us, remove_cgroup
from cloudtap.agent.config import LimitsSection

REPO = Path(__file__).resolve().parents[2]
LIMITS = LimitsSection(max_cpu_cores=0.5, max_memory_mib=128)


def _fake_v2(root: Path, controllers: str = "cpu io memory pids") -> Path:
    own = root / "system.slice" / "agent.service"
    own.mkdir(parents=True)
    for d in (root, root / "system.slice", own):
        (d / "cgroup.controllers").write_text(controllers + "\n")
        (d / "cgroup.subtree_control").write_text("")
        (d / "cgroup.procs").write_text("")
    (own / "cgroup.procs").write_text("4242\n")
    return own


def _read(path: Path) -> str:
    return path.read_text().strip()


def test_quota_from_cores() -> None:
    assert cpu_quota_us(0.5) == 50_000
    assert cpu_quota_us(2.0) == 200_000
    assert cpu_quota_us(0.001) == 1_000  # the kernel's minimum


def test_v2_on_a_fake_tree(tmp_path: Path) -> None:
    own = _fake_v2(tmp_path)
    mountinfo = f"41 31 0:38 / {tmp_path} rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
    res = apply_cgroup(
        LIMITS, "ct", pid=4242, mountinfo=mountinfo, proc_cgroup="0::/system.slice/agent.service\n"
    )
    assert res.applied and res.version == 2 and res.cpu_applied and res.memory_applied
    target = own / "ct"
    assert res.paths == [target] and res.created == [target] and res.previous == {target: own}
    assert _read(target / "cpu.max") == "50000 100000"
    assert _read(target / "memory.max") == str(128 << 20)
    assert _read(target / "cgroup.procs") == "4242"
    assert _read(own / "cgroup.subtree_control") == "+cpu +memory"
    assert "cpu.max 50000 100000" in res.reason and "memory.max 128 MiB" in res.reason
    remove_cgroup(res, timeout_s=0.0)  # a fake directory holds files, so it stays; the pid goes back
    assert _read(own / "cgroup.procs") == "4242"
    assert _read(own / "cgroup.subtree_control") == "-cpu -memory"


def test_v2_without_controllers_falls_back_to_v1(tmp_path: Path) -> None:
    """The hybrid layout of this CI host: an empty unified hierarchy, cpu and memory on v1."""
    unified = tmp_path / "unified"
    _fake_v2(unified, controllers="")
    cpu, mem = tmp_path / "cpu", tmp_path / "memory"
    (mem / "sess").mkdir(parents=True)
    cpu.mkdir()
    mountinfo = textwrap.dedent(
        f"""\
        31 23 0:28 / {tmp_path} rw,relatime - tmpfs tmpfs rw,mode=755
        32 31 0:29 / {cpu} rw,relatime - cgroup cgroup rw,cpu,cpuacct
        35 31 0:32 / {mem} rw,relatime - cgroup cgroup rw,memory
        39 31 0:36 / {tmp_path / "pids"} rw,relatime - cgroup cgroup rw,pids
        41 31 0:38 / {unified} rw,relatime - cgroup2 cgroup2 rw
        """
    )
    proc = "8:pids:/\n4:memory:/sess\n1:cpu,cpuacct:/\n0::/system.slice/agent.service\n"
    res = apply_cgroup(LIMITS, "ct", pid=77, mountinfo=mountinfo, proc_cgroup=proc)
    assert res.applied and res.version == 1 and res.cpu_applied and res.memory_applied
    assert res.paths == [cpu / "ct", mem / "sess" / "ct"]  # nested under the current cgroups
    assert _read(cpu / "ct" / "cpu.cfs_quota_us") == "50000"
    assert _read(cpu / "ct" / "cpu.cfs_period_us") == "100000"
    assert _read(mem / "sess" / "ct" / "memory.limit_in_bytes") == str(128 << 20)
    assert _read(mem / "sess" / "ct" / "cgroup.procs") == "77"
    assert not (unified / "system.slice" / "agent.service" / "ct").exists()


def test_nothing_writable_or_disabled(tmp_path: Path) -> None:
    off = apply_cgroup(LimitsSection(use_cgroup=False))
    assert not off.applied and "use_cgroup" in off.reason
    none = apply_cgroup(LIMITS, pid=1, mountinfo="", proc_cgroup="0::/\n")
    assert not none.applied and none.version == 0 and "self-throttling" in none.reason
    missing = apply_cgroup(
        LIMITS,
        pid=1,
        mountinfo=f"41 31 0:38 / {tmp_path / 'absent'} rw - cgroup2 cgroup2 rw\n",
        proc_cgroup="0::/x\n",
    )
    assert not missing.applied and "not visible" in missing.reason


_CHILD = textwrap.dedent(
    """
    import json, os, sys, time
    from cloudtap.agent.cgroup import apply_cgroup, cgroup_limits
    from cloudtap.agent.config import LimitsSection
    res = apply_cgroup(LimitsSection(max_cpu_cores=0.3, max_memory_mib=64), name=sys.argv[1])
    out = {"applied": res.applied, "reason": res.reason, "created": [str(p) for p in res.created],
           "cpu": res.cpu_applied, "memory": res.memory_applied, "cgroup": open("/proc/self/cgroup").read()}
    print(json.dumps(out), flush=True)
    if not res.applied:
        sys.exit(0)
    wall0, cpu0 = time.monotonic(), time.process_time()
    while time.monotonic() - wall0 < 1.5:
        pass
    out["cpu_fraction"] = (time.process_time() - cpu0) / (time.monotonic() - wall0)
    buf = bytearray(1 << 20)
    with open(sys.argv[2], "rb", buffering=0) as fh:  # 96 MiB of page cache, charged to this cgroup
        while fh.readinto(buf):
            pass
    out["limits"] = cgroup_limits()
    print(json.dumps(out), flush=True)
    """
)


def _candidate_dirs(name: str) -> list[Path]:
    """Where a child of this process would have created ``name`` (for cleanup after a crash)."""
    mounts = cgroup._parse_mountinfo(Path("/proc/self/mountinfo").read_text())
    paths = cgroup._parse_proc_cgroup(Path("/proc/self/cgroup").read_text())
    dirs = []
    for m in mounts:
        keys = [""] if m.fstype == "cgroup2" else [c for c in ("cpu", "memory") if c in m.controllers]
        for key in keys:
            own = cgroup._dir_of(m, paths.get(key, "/"))
            if own is not None:
                dirs.append(own / name)
    return dirs


@pytest.mark.skipif(sys.platform != "linux", reason="cgroups are Linux only")
def test_real_cgroup_in_a_child_process(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("not root: no writable cgroup controller")
    data = tmp_path / "cache.bin"
    with open(data, "wb") as fh:
        for _ in range(96):
            fh.write(os.urandom(1 << 20))
        fh.flush()
        os.fsync(fh.fileno())
        os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)  # the child reads it afresh
    name = f"cloudtap-test-{os.getpid()}"
    env = {**os.environ, "NUMBA_CACHE_DIR": os.environ.get("NUMBA_CACHE_DIR", str(REPO / ".numba-cache"))}
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, name, str(data)],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
    finally:
        leftovers = [d for d in _candidate_dirs(name) if d.exists()]
        remove_cgroup(CgroupResult(False, "", created=leftovers))
        assert not any(d.exists() for d in leftovers), "test cgroups left behind"
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    first = lines[0]
    if not first["applied"]:
        pytest.skip(f"no writable cpu/memory cgroup here: {first['reason']}")
    assert name in first["cgroup"]
    final = lines[-1]
    if first["cpu"]:
        assert 0.2 <= final["cpu_fraction"] <= 0.4, final  # 0.3 core enforced by the kernel
        assert final["limits"]["cpu_quota_us"] == 30_000
    if first["memory"]:
        limits = final["limits"]
        assert limits["memory_max_bytes"] == 64 << 20
        assert 0 < limits["memory_peak_bytes"] <= 64 << 20  # 96 MiB read, never more than 64 resident
        assert limits["memory_limit_hits"] > 0

"""Running benchmark processes pinned to one core, with wall time and peak RSS."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

GNU_TIME = "/usr/bin/time"


@dataclass
class ProcRun:
    """One finished process: wall seconds, exit code, peak RSS (KiB), CPU seconds and its output."""

    cmd: list[str]
    seconds: float
    returncode: int
    maxrss_kb: int
    stdout: str
    stderr: str
    timed_out: bool = False
    #: user + system CPU of the command and its waited-for children (robust on a busy host, where wall
    #: time also counts the time other processes held the pinned core)
    cpu_seconds: float = 0.0

    def check(self, what: str) -> ProcRun:
        """Raise RuntimeError when the process failed or timed out."""
        if self.timed_out:
            raise RuntimeError(f"{what}: timed out ({' '.join(self.cmd)})")
        if self.returncode != 0:
            tail = (self.stderr or self.stdout).strip().splitlines()[-3:]
            raise RuntimeError(f"{what}: exit {self.returncode}: {' | '.join(tail)}")
        return self


def usable_cores() -> list[int]:
    """CPU cores this process may run on, in order."""
    return sorted(os.sched_getaffinity(0))


def pinned(cmd: list[str], core: int) -> list[str]:
    """``cmd`` prefixed with ``taskset -c CORE`` (unchanged when taskset is missing)."""
    taskset = shutil.which("taskset")
    return [taskset, "-c", str(core), *cmd] if taskset else list(cmd)


def run_measured(
    cmd: list[str],
    log_dir: Path,
    name: str,
    timeout_s: float = 600.0,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> ProcRun:
    """Run ``cmd`` to completion; wall time from spawn to reap, peak RSS of the command itself.

    The peak RSS comes from ``/usr/bin/time`` (a small process forks the command), because a child
    forked straight from this (large) interpreter inherits its high-water mark; ``wait4``'s figure is
    the fallback (then an upper bound).

    Args:
        cmd: the command (already pinned with :func:`pinned` if wanted).
        log_dir: stdout/stderr go to ``<log_dir>/<name>.out|.err`` (no pipe back-pressure).
        name: log file stem.
        timeout_s: the process group is killed after this long.
        env: environment (default: inherited).
        cwd: working directory.

    Returns:
        A :class:`ProcRun`.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    out_path, err_path = log_dir / f"{name}.out", log_dir / f"{name}.err"
    rss_path = log_dir / f"{name}.rss"
    rss_path.unlink(missing_ok=True)
    if Path(GNU_TIME).is_file():
        cmd = [GNU_TIME, "-f", "%M", "-o", str(rss_path), *cmd]
    with out_path.open("wb") as out, err_path.open("wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env, cwd=cwd, start_new_session=True
        )
        expired = threading.Event()

        def kill() -> None:
            expired.set()
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

        timer = threading.Timer(timeout_s, kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
    maxrss_kb = int(usage.ru_maxrss)
    if rss_path.is_file():
        lines = rss_path.read_text().split()
        maxrss_kb = int(lines[-1]) if lines and lines[-1].isdigit() else maxrss_kb
    return ProcRun(
        cmd=[str(c) for c in cmd],
        seconds=seconds,
        returncode=proc.returncode,
        maxrss_kb=maxrss_kb,
        stdout=out_path.read_text(errors="replace"),
        stderr=err_path.read_text(errors="replace"),
        timed_out=expired.is_set(),
        cpu_seconds=float(usage.ru_utime + usage.ru_stime),
    )


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tool_version(cmd: list[str], marker: str = "", pattern: str = "") -> str:
    """First output line of ``cmd`` containing ``marker`` (cut to ``pattern``'s match), or ''."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return ""
    for line in (done.stdout + done.stderr).splitlines():
        if line.strip() and marker.lower() in line.lower():
            found = re.search(pattern, line) if pattern else None
            return found.group(0) if found else line.strip()
    return ""

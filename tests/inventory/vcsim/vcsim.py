"""Build (cached) and run the vCenter simulator of ``main.go`` for tests.

``build()`` runs ``build.sh`` (Debian's golang-go + golang-github-vmware-govmomi-dev, GOPATH mode,
offline) and returns the binary, or raises :class:`VcsimUnavailable` with the reason when go/govmomi
are not installed. :class:`Vcsim` starts it on a free loopback port and stops it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
USER, PASSWORD = "administrator@vsphere.local", "vcsim-pass"


class VcsimUnavailable(RuntimeError):
    """go or the govmomi sources are not installed."""


def build() -> Path:
    """The simulator binary, built once and cached in ``<repo>/.cache/vcsim``."""
    proc = subprocess.run(["sh", str(HERE / "build.sh")], capture_output=True, text=True, timeout=600)
    if proc.returncode == 2:
        raise VcsimUnavailable(proc.stderr.strip())
    if proc.returncode != 0:
        raise RuntimeError(f"vcsim build failed:\n{proc.stderr[-4000:]}")
    return Path(proc.stdout.strip().splitlines()[-1])


class Vcsim:
    """A running simulator: ``host``, ``port``, ``url``; ``stop()`` (or use as a context manager)."""

    def __init__(
        self,
        binary: Path,
        *,
        hosts_per_cluster: int = 3,
        clusters: int = 1,
        standalone_hosts: int = 1,
        vms: int = 2,
        vlan: int = 100,
        user: str = USER,
        password: str = PASSWORD,
    ) -> None:
        self.user, self.password = user, password
        args = [
            str(binary),
            "-l",
            "127.0.0.1:0",
            "-host",
            str(hosts_per_cluster),
            "-cluster",
            str(clusters),
            "-standalone-host",
            str(standalone_hosts),
            "-vm",
            str(vms),
            "-vlan",
            str(vlan),
            "-username",
            user,
            "-password",
            password,
        ]
        self._log = tempfile.TemporaryFile(mode="w+")  # not a pipe: a chatty simulator must never block
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=self._log, text=True, start_new_session=True
        )
        self.url = self._wait_url(timeout=20.0)
        hostport = self.url.split("://", 1)[1].split("/", 1)[0]
        self.host, port = hostport.rsplit(":", 1)
        self.port = int(port)

    def _wait_url(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line.startswith("VCSIM_URL="):
                return line.split("=", 1)[1].strip()
            if not line and self.proc.poll() is not None:
                self._log.seek(0)
                err = self._log.read()
                raise RuntimeError(f"vcsim exited with {self.proc.returncode}: {err[-2000:]}")
        self.stop()
        raise RuntimeError("vcsim did not report its URL in time")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        self._log.close()

    def __enter__(self) -> Vcsim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

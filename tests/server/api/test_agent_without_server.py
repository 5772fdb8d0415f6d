"""The agent installs and runs without the server extra: no chDB, ClickHouse client or web stack needed."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
SERVER_ONLY = ("chdb", "clickhouse_connect", "fastapi", "uvicorn", "starlette")

_BLOCKED_RUN = """
import importlib.abc, sys
BLOCK = set({blocked!r})
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in BLOCK:
            raise ImportError("blocked: " + name)
        return None
sys.meta_path.insert(0, Refuse())
import cloudtap.agent.runner, cloudtap.agent.config, cloudtap.agent.control, cloudtap.ship.transport
from cloudtap.cli.main import app
sys.argv = ["cloudtap", *{argv!r}]
try:
    app()
except SystemExit as exc:
    code = exc.code or 0
else:
    code = 0
leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCK)
print("LEAKED", leaked)
sys.exit(code)
"""


def _run_blocked(*argv: str) -> subprocess.CompletedProcess[str]:
    code = _BLOCKED_RUN.format(blocked=SERVER_ONLY, argv=list(argv))
    env = dict(os.environ, NUMBA_CACHE_DIR=str(REPO / ".numba-cache"), COLUMNS="120")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_agent_cli_runs_with_server_packages_blocked() -> None:
    out = _run_blocked("agent", "--help")
    assert out.returncode == 0, out.stderr
    assert "run" in out.stdout and "status" in out.stdout
    assert "LEAKED []" in out.stdout


def test_agent_config_prints_with_server_packages_blocked() -> None:
    out = _run_blocked("agent", "config")
    assert out.returncode == 0, out.stderr
    assert "LEAKED []" in out.stdout
    assert len(out.stdout.splitlines()) > 5  # the documented default configuration


def test_agent_extra_does_not_pull_the_server_stack() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    names = {req.split(">")[0].split("<")[0].split("=")[0].split("[")[0].strip().lower().replace("_", "-")
             for req in project["dependencies"] + extras["agent"]}  # fmt: skip
    server = {"chdb", "clickhouse-connect", "fastapi", "uvicorn", "starlette"}
    assert not names & server
    server_extra = {r.split(">")[0].split("<")[0].strip().lower() for r in extras["server"]}
    assert {"chdb", "clickhouse-connect", "fastapi", "uvicorn", "prometheus-client"} <= server_extra

"""deploy/: the systemd units' least privilege and sandbox, and the documented server config."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from cloudtap.agent.config import load_agent_config
from cloudtap.server.settings import ServerSettings, load_server_settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SANDBOX = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "Restart": "on-failure",
    "User": "cloudtap",
    "Group": "cloudtap",
    "StateDirectory": "cloudtap",
}
AGENT_CAPS = {"CAP_NET_RAW", "CAP_NET_ADMIN", "CAP_DAC_READ_SEARCH"}  # see the unit's comments


def _unit(name: str) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None, strict=True, empty_lines_in_values=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    parser.read_string((DEPLOY / name).read_text())
    assert set(parser.sections()) == {"Unit", "Service", "Install"}
    return parser["Service"]


def _writable(service: configparser.SectionProxy) -> list[Path]:
    dirs = [
        Path("/var/lib") / service["StateDirectory"],
        Path("/var/cache") / service.get("CacheDirectory", "-"),
    ]
    return dirs + [Path(p.lstrip("-")) for p in service.get("ReadWritePaths", "").split()]


def _under(path: Path, roots: list[Path]) -> bool:
    return any(path == r or r in path.parents for r in roots)


@pytest.mark.parametrize("name", ["cloudtap-agent.service", "cloudtap-server.service"])
def test_both_units_run_sandboxed_as_the_cloudtap_user(name: str) -> None:
    service = _unit(name)
    for key, value in SANDBOX.items():
        assert service.get(key) == value, f"{name}: {key}"
    assert "cloudtap" in (DEPLOY / "cloudtap.sysusers").read_text().split()
    for key in ("ProtectKernelModules", "ProtectKernelTunables", "RestrictSUIDSGID", "PrivateDevices"):
        assert service.get(key) == "yes", f"{name}: {key}"
    text = (DEPLOY / name).read_text()
    assert "MemoryDenyWriteExecute" not in service  # JIT (numba, ClickHouse) needs W->X pages
    assert "# Not MemoryDenyWriteExecute" in text


def test_the_agent_has_capture_capabilities_and_nothing_more() -> None:
    service = _unit("cloudtap-agent.service")
    ambient = set(service["AmbientCapabilities"].split())
    assert ambient == set(service["CapabilityBoundingSet"].split())
    assert "CAP_NET_RAW" in ambient and ambient <= AGENT_CAPS
    assert set(service["RestrictAddressFamilies"].split()) == {
        "AF_PACKET", "AF_INET", "AF_INET6", "AF_UNIX", "AF_NETLINK"
    }  # fmt: skip
    assert "--config /etc/cloudtap/agent.yaml" in service["ExecStart"]
    assert {"cpu", "memory"} <= set(service["Delegate"].split())  # the agent nests its own cgroup
    assert "ProtectControlGroups" not in service
    cfg = load_agent_config(DEPLOY / "agent.yaml", env={})
    writable = _writable(service)
    for path in (
        cfg.output.spool_directory,
        cfg.output.directory,
        cfg.packets.directory,
        cfg.controller.cache_file,
    ):
        assert _under(path, writable), path
    numba = service["Environment"].split("NUMBA_CACHE_DIR=")[1].split()[0]
    assert _under(Path(numba), writable)


def test_the_server_has_no_capability_at_all() -> None:
    service = _unit("cloudtap-server.service")
    assert service["CapabilityBoundingSet"] == "" and service["AmbientCapabilities"] == ""
    families = set(service["RestrictAddressFamilies"].split())
    assert "AF_PACKET" not in families and {"AF_INET", "AF_INET6", "AF_UNIX"} <= families
    assert service["ProtectControlGroups"] == "yes"
    assert "--config /etc/cloudtap/server.yaml" in service["ExecStart"]
    settings = ServerSettings()
    chdb_path = Path(settings.storage.dsn.removeprefix("chdb://"))
    assert _under(chdb_path, _writable(service))


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verify_accepts_the_units(tmp_path: Path) -> None:
    units = []
    for name in ("cloudtap-agent.service", "cloudtap-server.service"):
        text = (DEPLOY / name).read_text()  # the installed binary does not exist here: any executable will do
        (tmp_path / name).write_text(
            text.replace("/opt/cloudtap/.venv/bin/cloudtap", shutil.which("true") or "/bin/true")
        )
        units.append(str(tmp_path / name))
    done = subprocess.run(["systemd-analyze", "verify", *units], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert not [line for line in done.stderr.splitlines() if "cloudtap-" in line], (
        done.stderr
    )  # no unknown keys


def _keys(model: type[BaseModel], instance: BaseModel, tree: dict[str, Any], where: str) -> None:
    """Every key is documented, except removed ones (``deprecated``: kept only to refuse them clearly)."""
    live = {name for name, field in model.model_fields.items() if not field.deprecated}
    assert set(tree) == live, f"{where or 'top level'}: keys differ from settings.py"
    for name in live:
        value = getattr(instance, name)
        if isinstance(value, BaseModel):
            _keys(type(value), value, tree[name], f"{where}{name}.")


def test_server_yaml_documents_every_key_with_its_default() -> None:
    path = DEPLOY / "server.yaml"
    _keys(ServerSettings, ServerSettings(), yaml.safe_load(path.read_text()), "")
    assert load_server_settings(path, env={}) == ServerSettings()
    text = path.read_text()
    assert "tls_cert:" in text and "tls_key:" in text and "cloudtap server certs" in text
    assert all(len(line) <= 110 for line in text.splitlines())

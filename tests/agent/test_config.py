"""Agent configuration: YAML, environment overrides, clear errors, documented defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cloudtap.agent.config import AgentConfig, documented_defaults, load_agent_config
from cloudtap.errors import ConfigError


def test_defaults_without_a_file() -> None:
    cfg = load_agent_config(None, env={})
    assert cfg.capture.mode == "interfaces"
    assert cfg.capture.snaplen == 256
    assert cfg.meter.key_by_interface


def test_yaml_then_environment_overrides(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("limits:\n  max_cpu_cores: 0.5\n  max_pps: 1000\ncapture:\n  bpf: 'tcp'\n")
    env = {"CLOUDTAP_AGENT__LIMITS__MAX_PPS": "5000", "CLOUDTAP_AGENT__CAPTURE__INTERFACES": "[tap1, tap2]"}
    cfg = load_agent_config(path, env=env)
    assert cfg.limits.max_cpu_cores == 0.5
    assert cfg.limits.max_pps == 5000
    assert cfg.capture.interfaces == ["tap1", "tap2"]
    assert cfg.capture.bpf == "tcp"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("limits:\n  max_cpu_cores: -1\n", "limits.max_cpu_cores"),
        ("capture:\n  snaplne: 100\n", "capture.snaplne"),
        ("- just\n- a list\n", "mapping"),
        ("capture: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_config_names_the_problem(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        load_agent_config(path, env={})


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read agent config"):
        load_agent_config(tmp_path / "nope.yaml", env={})


def test_documented_defaults_round_trip() -> None:
    text = documented_defaults()
    assert "# CPU the agent may use" in text
    assert AgentConfig.model_validate(yaml.safe_load(text)) == AgentConfig()


def test_example_config_is_valid() -> None:
    example = Path(__file__).resolve().parents[2] / "deploy" / "agent.yaml"
    cfg = load_agent_config(example, env={})
    assert cfg.capture.mode == "interfaces"

"""An agent config in replay mode for tests (``from agent_replay import replay_config``)."""

from __future__ import annotations

from pathlib import Path

from cloudtap.agent.config import AgentConfig, load_agent_config

ONE_TCP = "PcapPlusPlus/Tests/Pcap++Test/PcapExamples/one_tcp_stream.pcap"


def replay_config(
    pcap: Path, tmp_path: Path, limits: dict[str, object] | None = None, **capture: object
) -> AgentConfig:
    """Replay ``pcap`` with outputs under ``tmp_path``, no cgroup, no Unix socket; ``limits`` and
    ``capture`` override those sections' keys."""
    env = {
        "CLOUDTAP_AGENT__CAPTURE__MODE": "replay",
        "CLOUDTAP_AGENT__CAPTURE__REPLAY_FILE": str(pcap),
        "CLOUDTAP_AGENT__OUTPUT__DIRECTORY": str(tmp_path / "out"),
        "CLOUDTAP_AGENT__CONTROL__PORT": "0",
        "CLOUDTAP_AGENT__CONTROL__SOCKET": "",  # no Unix socket in /run
        "CLOUDTAP_AGENT__LIMITS__USE_CGROUP": "false",
        # the agent runs inside pytest: the test process (compiler, other tests) is not the grant
        "CLOUDTAP_AGENT__LIMITS__MAX_MEMORY_MIB": "16384",
    }
    for key, value in (limits or {}).items():
        env[f"CLOUDTAP_AGENT__LIMITS__{key.upper()}"] = str(value)
    cfg = load_agent_config(None, env=env)
    if capture:
        cfg = cfg.model_copy(update={"capture": cfg.capture.model_copy(update=capture)})
    return cfg

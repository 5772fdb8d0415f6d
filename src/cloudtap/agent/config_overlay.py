"""Config overlays: a partial AgentConfig (nested dict) that a group or a policy lays over an agent's own config.

Every leaf key is either hot (applied by a running agent at once: ``json_schema_extra={"apply": "hot"}`` in
:mod:`cloudtap.agent.config`) or restart-required (reported by the agent, used from its next start).
Imports no web framework: the agent uses it too.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel, ValidationError

from cloudtap.agent.config import AgentConfig
from cloudtap.errors import ConfigError

#: Sections the controller manages itself; an overlay may not set them.
RESERVED = ("agent_id", "controller", "policy")
#: Keys only the host's own config sets: who may reach the agent, and where it sends its credential.
LOCAL_ONLY = ("control", "output.server_url", "output.server_token")


def deep_merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``overlay`` laid over it (nested dicts merged, everything else replaced); inputs untouched."""
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def leaves(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"capture.bpf": ..., ...}``: the leaf keys of a nested dict."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(leaves(value, path + "."))
        else:
            out[path] = value
    return out


def apply_mode(key: str) -> str:
    """``"hot"`` or ``"restart"`` for a dotted AgentConfig key (unknown keys: restart)."""
    model: type[BaseModel] = AgentConfig
    parts = key.split(".")
    for i, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is None:
            return "restart"
        annotation = field.annotation
        if i == len(parts) - 1 or not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            extra = field.json_schema_extra
            return "hot" if isinstance(extra, dict) and extra.get("apply") == "hot" else "restart"
        model = annotation
    return "restart"


def validate_overlay(overlay: dict[str, Any]) -> dict[str, str]:
    """Check that ``overlay`` laid over the defaults is a valid AgentConfig.

    Returns:
        Each leaf key of the overlay -> ``"hot"`` or ``"restart"``.
    Raises:
        ConfigError: not a mapping, a reserved section, an unknown key or a bad value (named).
    """
    if not isinstance(overlay, dict):
        raise ConfigError("a config overlay must be a mapping of sections")
    reserved = [k for k in overlay if k in RESERVED]
    if reserved:
        raise ConfigError(f"the controller manages {reserved} itself; an overlay may not set them")
    local = sorted(k for k in leaves(overlay) if any(k == x or k.startswith(x + ".") for x in LOCAL_ONLY))
    if local:
        raise ConfigError(f"{local} are set in the agent's own config only (they decide who may reach the agent "
                          "and where its credential goes); an overlay may not set them")
    try:
        AgentConfig.model_validate(deep_merge(AgentConfig().model_dump(mode="json"), overlay))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid config overlay: {problems}") from exc
    return {key: apply_mode(key) for key in leaves(overlay)}


def effective_config(base: AgentConfig, overlay: dict[str, Any]) -> AgentConfig:
    """``base`` with ``overlay`` laid over it, validated (ConfigError names a bad key)."""
    try:
        return AgentConfig.model_validate(deep_merge(base.model_dump(mode="json"), overlay))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid config from the controller: {problems}") from exc


def changed_keys(old: AgentConfig, new: AgentConfig) -> dict[str, str]:
    """Leaf keys whose value differs between two configs -> ``"hot"`` or ``"restart"``."""
    a, b = leaves(old.model_dump(mode="json")), leaves(new.model_dump(mode="json"))
    return {k: apply_mode(k) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}

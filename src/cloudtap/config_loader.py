"""Layered configuration: defaults < YAML file < environment, validated by a pydantic model.

An environment variable ``<PREFIX><SECTION>__<KEY>=value`` overrides one key (``__`` separates
levels; values are parsed as YAML scalars, so ``1.5``, ``true`` and ``[a, b]`` work).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from cloudtap.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def load_layered(
    model: type[M], path: str | Path | None, env: Mapping[str, str] | None, prefix: str, what: str
) -> M:
    """Validate ``model`` from a YAML file and environment overrides.

    Raises:
        ConfigError: unreadable file, not YAML, not a mapping, unknown key or invalid value; the
            message names the key.
    """
    tree: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read {what} {p}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p} is not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{p}: the top level must be a mapping of sections")
        tree = loaded or {}
    environ = os.environ if env is None else env
    for key, raw in environ.items():
        if key.startswith(prefix):
            parts = [p.lower() for p in key[len(prefix) :].split("__") if p]
            if parts:
                _set_path(tree, parts, yaml.safe_load(raw) if raw != "" else None)
    try:
        return model.model_validate(tree)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid {what}: {problems}") from exc


def _set_path(tree: dict[str, Any], path: list[str], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"environment override {'.'.join(path)}: {part} is not a section")
        node = child
    node[path[-1]] = value

"""Bootstrap tokens (shared or per-agent) that let an agent register; every refusal says why.

A bootstrap token only registers: the answer carries the agent's own credential, which every later call
uses (:mod:`cloudtap.server.controller.identity`). Without any bootstrap token configured, registration is
open (a lab): anyone reaching the server may register a new agent, which still gets and needs its own
credential afterwards; the server warns at start.
"""

from __future__ import annotations

import hmac

from cloudtap.server.settings import ControllerSection


class Refusal(Exception):
    """The controller refuses a request: HTTP ``status`` and a reason the agent's operator can act on."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def registration_open(cfg: ControllerSection) -> bool:
    """True when no bootstrap token is configured: any host may register a new agent."""
    return cfg.token is None and not cfg.agent_tokens


def check_token(cfg: ControllerSection, names: tuple[str, ...], token: str | None) -> None:
    """Accept or refuse an agent's token.

    A per-agent token (``agent_tokens`` keyed by agent name or host name) wins over the shared token.
    With neither configured, registration is open.

    Args:
        cfg: the controller settings.
        names: the agent's name and host name (either may key ``agent_tokens``).
        token: what the agent sent (None: nothing).
    Raises:
        Refusal: 401 when a token is needed and missing, 403 when it is wrong.
    """
    own = next((cfg.agent_tokens[n] for n in names if n and n in cfg.agent_tokens), None)
    if own is None and cfg.token is None:
        if cfg.agent_tokens:
            raise Refusal(403, f"agent {names[0]!r} has no per-agent token configured on the server and no shared token is set")
        return
    if not token:
        raise Refusal(401, "missing token: send 'Authorization: Bearer <bootstrap token>' (controller.token in the agent "
                           "config)")
    if own is not None:
        if not hmac.compare_digest(token.encode(), own.encode()):
            raise Refusal(403, f"wrong per-agent token for agent {names[0]!r}")
        return
    assert cfg.token is not None
    if not hmac.compare_digest(token.encode(), cfg.token.encode()):
        raise Refusal(403, "wrong shared token")

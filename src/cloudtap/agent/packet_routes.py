"""The packet-store routes of the agent's control endpoint.

- ``GET /packets?from=NS&to=NS[&filter=BPF][&interface=NAME...][&max_bytes=N]``: the stored packets
  of the window ``[from, to)`` (ns since the epoch) as a pcapng stream, one Interface Description
  Block per stored interface (named ``<vm>/<interface>``), time-ordered. ``interface`` may repeat or
  hold a comma-separated list of names, VM domains or globs. Answers 400 (bad parameter or filter),
  404 (no packet store), 413 (more than ``max_bytes`` of pcapng packet blocks match; default 1 GiB).
- ``GET /packets/stats``: the store's counters and interfaces as JSON.
- ``POST /packets/config``: JSON object of live settings (``enabled``, ``interfaces``, ``snaplen``,
  ``max_disk_mib``); answers the settings in force.
"""

from __future__ import annotations

import dataclasses
import json
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from pydantic import ValidationError

from cloudtap.agent.packet_query import PacketQueryTooLarge
from cloudtap.errors import FilterError

if TYPE_CHECKING:
    from cloudtap.agent.runner import Agent

DEFAULT_MAX_BYTES = 1 << 30
PCAPNG_TYPE = "application/x-pcapng"


def _reply(handler: BaseHTTPRequestHandler, code: int, obj: Any) -> None:
    body = json.dumps(obj, default=str).encode()
    handler.send_response(code)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def _int(params: dict[str, list[str]], name: str, default: int | None = None) -> int:
    values = params.get(name)
    if not values:
        if default is None:
            raise ValueError(f"missing parameter {name!r} (ns since the epoch)")
        return default
    try:
        return int(values[-1])
    except ValueError:
        raise ValueError(f"parameter {name!r} must be an integer, got {values[-1]!r}") from None


def handle_get(handler: BaseHTTPRequestHandler, agent: Agent) -> None:
    """Serve ``GET /packets`` and ``GET /packets/stats``."""
    url = urlsplit(handler.path)
    store = agent.packet_store
    if url.path == "/packets/stats":
        _reply(handler, 200, {
            "config": store.config.model_dump(mode="json"),
            "stats": dataclasses.asdict(store.stats),
            "interfaces": [dataclasses.asdict(i) for i in store.interfaces()],
        })  # fmt: skip
        return
    if not store.config.enabled and store.stats.stored_packets == 0:
        _reply(handler, 404, {"error": "this agent keeps no packets (packets.enabled is false)"})
        return
    params = parse_qs(url.query, keep_blank_values=False)
    try:
        from_ns, to_ns = _int(params, "from"), _int(params, "to")
        max_bytes = _int(params, "max_bytes", DEFAULT_MAX_BYTES)
        if to_ns <= from_ns:
            raise ValueError("'to' must be after 'from'")
        bpf = (params.get("filter") or [None])[-1]
        names = [n for v in params.get("interface", []) for n in v.split(",") if n]
        query = store.query(from_ns, to_ns, bpf, names or None)
        query.check_size(max_bytes)
    except (ValueError, FilterError) as exc:
        _reply(handler, 400, {"error": str(exc)})
        return
    except PacketQueryTooLarge as exc:
        _reply(handler, 413, {"error": str(exc), "max_bytes": exc.limit, "needed": exc.needed})
        return
    handler.send_response(200)
    handler.send_header("Content-Type", PCAPNG_TYPE)
    handler.send_header("X-Cloudtap-Agent", agent.agent_id)
    handler.send_header("X-Cloudtap-Blocks", f"{len(query.blocks)} read, {query.skipped_blocks} skipped")
    handler.end_headers()
    for chunk in query.pcapng_chunks(agent.agent_id):
        handler.wfile.write(chunk)


def handle_config(handler: BaseHTTPRequestHandler, agent: Agent) -> None:
    """Serve ``POST /packets/config``: apply live settings of the packet store."""
    length = int(handler.headers.get("Content-Length") or 0)
    try:
        changes = json.loads(handler.rfile.read(length) or b"{}")
        if not isinstance(changes, dict):
            raise ValueError("body must be a JSON object")
        config = agent.packet_store.configure(**changes)
    except (ValueError, ValidationError) as exc:
        _reply(handler, 400, {"error": str(exc)})
        return
    _reply(handler, 200, config.model_dump(mode="json"))

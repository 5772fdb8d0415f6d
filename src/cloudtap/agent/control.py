"""The agent's local control endpoint: status, Prometheus metrics, capture start/stop.

Deliberately tiny (the standard library's threading HTTP server): the agent must not pull a web
framework onto every hypervisor. Endpoints:

- ``GET /health``: ``{"ok": true}``, the only call that needs no key (liveness probes)
- ``GET /status``: the :class:`~cloudtap.agent.status.AgentStatus` as JSON
- ``GET /metrics``: Prometheus text format
- ``POST /capture/start``, ``POST /capture/stop``: applied within one read timeout (~0.1 s)
- ``POST /shutdown``: stop the agent so that its service manager starts it again (exit status
  :data:`~cloudtap.agent.runner.EXIT_RESTART`; see the runner)
- ``GET /packets?from=&to=&filter=&interface=&max_bytes=``: stored packets as pcapng (see
  :mod:`cloudtap.agent.packet_routes`); ``GET /packets/stats``; ``POST /packets/config`` (JSON)

Who may call: over TCP, a caller sending ``Authorization: Bearer <key>`` with a key the agent accepts
(compared in constant time): the control key the controller issued at registration (the server sends it
to fetch packets), or the key of ``control.key_file``. A standalone agent without a key file opens no TCP
port at all. On the Unix socket (:mod:`cloudtap.agent.control_socket`, mode 0600) no key is needed: the
file's permissions (and the peer's uid) are the check.
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from cloudtap.agent import packet_routes
from cloudtap.agent.requests import REQUEST_DROPS
from cloudtap.errors import ConfigError

if TYPE_CHECKING:
    from cloudtap.agent.runner import Agent

log = logging.getLogger(__name__)
Keys = Callable[[], list[str]]
MIN_KEY_CHARS = 16


def read_key_file(path: Path) -> str:
    """The key in ``control.key_file`` (stripped).

    Raises:
        ConfigError: unreadable, or shorter than :data:`MIN_KEY_CHARS`.
    """
    try:
        key = path.read_text(encoding="utf-8").strip()
        mode = path.stat().st_mode
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"control.key_file {path}: cannot read it: {exc}") from exc
    if len(key) < MIN_KEY_CHARS:
        raise ConfigError(f"control.key_file {path}: the key needs at least {MIN_KEY_CHARS} characters")
    if mode & 0o077:
        log.warning("control.key_file %s is readable by group or others: chmod 600 it", path)
    return key


class AgentCollector:
    """Prometheus collector reading one status snapshot per scrape (no per-packet metric updates)."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def collect(self) -> Any:
        s = self.agent.status()
        labels = ["agent"]
        values = [s.agent_id]

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            m = CounterMetricFamily(f"cloudtap_agent_{name}", doc, labels=labels)
            m.add_metric(values, value)
            return m

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            m = GaugeMetricFamily(f"cloudtap_agent_{name}", doc, labels=labels)
            m.add_metric(values, value)
            return m

        yield counter("captured_packets", "frames captured", s.captured_packets)
        yield counter("captured_bytes", "wire bytes captured", s.captured_bytes)
        yield counter("kernel_drops", "frames the kernel dropped (ring full)", s.kernel_drops)
        yield counter("filter_drops", "frames rejected by a user-space filter", s.filter_drops)
        yield counter("duplicates", "mirrored duplicates dropped", s.duplicates)
        yield counter("pps_limit_drops", "frames dropped by the pps cap", s.pps_limit_drops)
        yield counter("meter_drops", "packets not metered: flow table full", s.meter_drops)
        yield counter("records", "flow records emitted", s.records)
        yield counter("record_bytes", "bytes of records written", s.record_bytes)
        yield counter("breaker_trips", "circuit breaker trips", s.breaker_trips)
        yield gauge("capturing", "1 when capture is running", 1.0 if s.capturing else 0.0)
        yield gauge("active_flows", "flows in the tables", s.active_flows)
        yield gauge("flow_table_capacity", "flow table slots", s.flow_table_capacity)
        yield gauge("wire_reduction_ratio", "captured bytes / record bytes", s.wire_reduction)
        yield gauge("cpu_percent", "process CPU, percent of one core", s.cpu_percent)
        yield gauge("rss_bytes", "resident memory incl. ring pages", s.rss_bytes)
        yield gauge("host_load1", "host 1-minute load average", s.load1)
        per = CounterMetricFamily(
            "cloudtap_agent_interface_packets", "frames per interface", labels=["agent", "interface"]
        )
        drops = CounterMetricFamily(
            "cloudtap_agent_interface_kernel_drops", "kernel drops per interface", labels=["agent", "interface"]
        )
        for name, counters in s.interfaces.items():
            per.add_metric([s.agent_id, name], counters.get("packets", 0) or 0)
            drops.add_metric([s.agent_id, name], counters.get("kernel_drops", 0) or 0)
        yield per
        yield drops
        ipfix_records = CounterMetricFamily(
            "cloudtap_agent_ipfix_records", "flow records sent to an IPFIX collector", labels=["agent", "target"]
        )
        ipfix_errors = CounterMetricFamily(
            "cloudtap_agent_ipfix_errors", "failed IPFIX sends and connects", labels=["agent", "target"]
        )
        ipfix_lost = CounterMetricFamily(
            "cloudtap_agent_ipfix_records_lost", "flow records not delivered to an IPFIX collector", labels=["agent", "target"]
        )
        for target, c in s.ipfix.items():
            ipfix_records.add_metric([s.agent_id, target], c["records"])
            ipfix_errors.add_metric([s.agent_id, target], c["errors"])
            ipfix_lost.add_metric([s.agent_id, target], c["records_lost"])
        yield ipfix_records
        yield ipfix_errors
        yield ipfix_lost
        yield from broker_metrics(s.agent_id, s.broker)
        yield from request_metrics(s.agent_id, s.requests)


def request_metrics(agent_id: str, requests: dict[str, Any]) -> Any:
    """The request parsers' families (docs/requests.md, "In the agent"); none while requests are off."""
    if not requests.get("enabled"):
        return
    parsed = CounterMetricFamily("cloudtap_agent_requests", "application requests parsed", labels=["agent"])
    parsed.add_metric([agent_id], requests.get("requests", 0))
    yield parsed
    by_status = CounterMetricFamily(
        "cloudtap_agent_request_records", "request records written, by outcome", labels=["agent", "status"]
    )
    for status, n in (requests.get("by_status") or {}).items():
        by_status.add_metric([agent_id, status], n)
    yield by_status
    drops = CounterMetricFamily(
        "cloudtap_agent_request_drops",
        "requests or segments not parsed, paired or counted on a flow record, by reason",
        labels=["agent", "reason"],
    )
    for reason in REQUEST_DROPS:
        drops.add_metric([agent_id, reason], requests.get(reason, 0))
    yield drops
    flows = GaugeMetricFamily(
        "cloudtap_agent_request_flows", "flows in the request parsers' tables", labels=["agent"]
    )
    flows.add_metric([agent_id], requests.get("flows", 0))
    yield flows
    capacity = GaugeMetricFamily(
        "cloudtap_agent_request_flow_capacity", "request parser flow table slots", labels=["agent"]
    )
    capacity.add_metric([agent_id], requests.get("table_capacity", 0))
    yield capacity


def broker_metrics(agent_id: str, broker: dict[str, Any]) -> Any:
    """The packet broker's families (docs/broker.md, "Counters")."""
    labels = ["agent", "destination"]
    packets = CounterMetricFamily("cloudtap_agent_forwarded_packets", "copies sent", labels=labels)
    sent = CounterMetricFamily("cloudtap_agent_forwarded_bytes", "underlay bytes sent", labels=labels)
    drops = CounterMetricFamily(
        "cloudtap_agent_forward_drops", "copies not sent (cap, fuse, error)", labels=[*labels, "reason"]
    )
    for name, c in (broker.get("destinations") or {}).items():
        packets.add_metric([agent_id, name], c.get("packets", 0))
        sent.add_metric([agent_id, name], c.get("bytes", 0))
        for reason in ("cap", "fuse", "error"):
            drops.add_metric([agent_id, name, reason], c.get(f"drops_{reason}", 0))
    fuse = GaugeMetricFamily(
        "cloudtap_agent_broker_fuse_open", "1 while the host fuse stops forwarding", labels=["agent"]
    )
    fuse.add_metric([agent_id], 1.0 if broker.get("fuse_open") else 0.0)
    yield from (packets, sent, drops, fuse)


class ControlKeys:
    """The keys the TCP endpoint accepts now: the controller's current control key and ``control.key_file``'s.

    Raises:
        ConfigError: the key file is unreadable or its key too short (at construction: before the agent starts).
    """

    def __init__(self, key_file: Path | None, credentials: Any = None) -> None:
        self.file_key = read_key_file(key_file) if key_file is not None else None
        self.credentials = credentials

    @property
    def tcp(self) -> bool:
        """True when a TCP endpoint may open: some key can exist (a controller issues one, or a key file)."""
        return self.credentials is not None or self.file_key is not None

    def __call__(self) -> list[str]:
        issued = self.credentials.control_key() if self.credentials is not None else None
        return [k for k in (issued, self.file_key) if k]


def open_endpoints(agent: Agent, keys: ControlKeys) -> tuple[ControlServer | None, Any]:
    """The TCP endpoint (when a key can exist) and the Unix socket (when configured and possible)."""
    from cloudtap.agent.control_socket import UnixControlServer

    ctl = agent.config.control
    tcp = ControlServer(agent, ctl.listen, ctl.port, keys) if keys.tcp else None
    if tcp is None:
        log.warning("control: a standalone agent without control.key_file opens no TCP endpoint; use the Unix "
                    "socket %s", ctl.socket)  # fmt: skip
    unix = None
    if ctl.socket is not None:
        try:
            unix = UnixControlServer(trusted_handler(agent), ctl.socket)
        except OSError as exc:
            log.warning("control: no Unix socket at %s: %s", ctl.socket, exc)
    return tcp, unix


class ControlServer:
    """Serves the control endpoint over TCP in a daemon thread; every call but ``/health`` needs a key.

    Args:
        agent: the agent.
        host: address to listen on.
        port: port (0: any).
        keys: the keys accepted now (read at each request: a new registration rotates the controller's).
    """

    def __init__(self, agent: Agent, host: str = "127.0.0.1", port: int = 9477, keys: Keys | None = None) -> None:
        self.agent = agent
        handler = _make_handler(agent, _registry(agent), keys or list)
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="control", daemon=True
        )

    @property
    def url(self) -> str:
        address = self.httpd.server_address
        host, port = str(address[0]), int(address[1])
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _registry(agent: Agent) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AgentCollector(agent))  # type: ignore[arg-type]
    return registry


def trusted_handler(agent: Agent) -> type[BaseHTTPRequestHandler]:
    """The handler of the Unix socket: the same endpoints, no key (the socket's permissions are the check)."""
    return _make_handler(agent, _registry(agent), None)


def _refusal(sent: str | None, keys: list[str]) -> str | None:
    """Why a TCP caller is refused (None: the key is right)."""
    if not keys:
        return ("this agent accepts no control key yet (it has not registered with its controller and has no "
                "control.key_file); use its Unix socket")  # fmt: skip
    if not sent:
        return "missing control key: send 'Authorization: Bearer <control key>' (or use the agent's Unix socket as root)"
    ok = False
    for key in keys:  # every key compared: the time does not say which one matched
        ok |= hmac.compare_digest(sent.encode(), key.encode())
    return None if ok else "wrong control key"


def _make_handler(agent: Agent, registry: CollectorRegistry, keys: Keys | None) -> type[BaseHTTPRequestHandler]:
    """The endpoint's handler; ``keys`` None: trusted transport (the Unix socket), no key checked."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "cloudtap-agent"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            return None

        def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, code: int, obj: Any) -> None:
            self._send(code, json.dumps(obj, default=str).encode())

        def _allowed(self) -> bool:
            """True when the caller may go on; else the 401 is sent."""
            if keys is None:
                return True
            header = self.headers.get("Authorization", "")
            scheme, _, value = header.partition(" ")
            reason = _refusal(value.strip() if scheme.lower() == "bearer" else None, keys())
            if reason is None:
                return True
            body = json.dumps({"error": reason}).encode()
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Bearer realm="cloudtap-agent"')
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return False

        def do_GET(self) -> None:  # noqa: N802 - stdlib naming
            if self.path == "/health":
                self._json(200, {"ok": True})
                return
            if not self._allowed():
                return
            if self.path == "/status":
                self._json(200, dataclasses.asdict(agent.status()))
            elif self.path == "/metrics":
                self._send(200, generate_latest(registry), "text/plain; version=0.0.4")
            elif self.path.split("?")[0] in ("/packets", "/packets/stats"):
                packet_routes.handle_get(self, agent)
            else:
                self._json(404, {"error": f"no such endpoint: GET {self.path}"})

        def do_POST(self) -> None:  # noqa: N802 - stdlib naming
            if not self._allowed():
                return
            if self.path == "/capture/start":
                agent.set_capturing(True)
                self._json(200, {"capturing": True})
            elif self.path == "/capture/stop":
                agent.set_capturing(False)
                self._json(200, {"capturing": False})
            elif self.path == "/packets/config":
                packet_routes.handle_config(self, agent)
            elif self.path == "/shutdown":
                from cloudtap.agent.runner import EXIT_RESTART

                self._json(200, {"shutdown": True, "exit_status": EXIT_RESTART})
                agent.shutdown(EXIT_RESTART, "shutdown requested on the control endpoint")
            else:
                self._json(404, {"error": f"no such endpoint: POST {self.path}"})

    return Handler

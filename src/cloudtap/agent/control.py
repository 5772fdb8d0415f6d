"""The agent's local control endpoint: status, Prometheus metrics, capture start/stop.

Deliberately tiny (the standard library's threading HTTP server): the agent must not pull a web
framework onto every hypervisor. Endpoints:

- ``GET /status``: the :class:`~cloudtap.agent.runner.AgentStatus` as JSON
- ``GET /metrics``: Prometheus text format
- ``POST /capture/start``, ``POST /capture/stop``: applied within one read timeout (~0.1 s)
- ``POST /shutdown``: stop the agent
- ``GET /packets?from=&to=&filter=&interface=&max_bytes=``: stored packets as pcapng (see
  :mod:`cloudtap.agent.packet_routes`); ``GET /packets/stats``; ``POST /packets/config`` (JSON)
"""

from __future__ import annotations

import dataclasses
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from cloudtap.agent import packet_routes

if TYPE_CHECKING:
    from cloudtap.agent.runner import Agent


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


class ControlServer:
    """Serves the control endpoint in a daemon thread."""

    def __init__(self, agent: Agent, host: str = "127.0.0.1", port: int = 9477) -> None:
        self.agent = agent
        registry = CollectorRegistry(auto_describe=False)
        registry.register(AgentCollector(agent))  # type: ignore[arg-type]
        handler = _make_handler(agent, registry)
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="control", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _make_handler(agent: Agent, registry: CollectorRegistry) -> type[BaseHTTPRequestHandler]:
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

        def do_GET(self) -> None:  # noqa: N802 - stdlib naming
            if self.path == "/status":
                self._json(200, dataclasses.asdict(agent.status()))
            elif self.path == "/metrics":
                self._send(200, generate_latest(registry), "text/plain; version=0.0.4")
            elif self.path.split("?")[0] in ("/packets", "/packets/stats"):
                packet_routes.handle_get(self, agent)
            else:
                self._json(404, {"error": f"no such endpoint: GET {self.path}"})

        def do_POST(self) -> None:  # noqa: N802 - stdlib naming
            if self.path == "/capture/start":
                agent.set_capturing(True)
                self._json(200, {"capturing": True})
            elif self.path == "/capture/stop":
                agent.set_capturing(False)
                self._json(200, {"capturing": False})
            elif self.path == "/packets/config":
                packet_routes.handle_config(self, agent)
            elif self.path == "/shutdown":
                self._json(200, {"shutdown": True})
                agent.shutdown()
            else:
                self._json(404, {"error": f"no such endpoint: POST {self.path}"})

    return Handler

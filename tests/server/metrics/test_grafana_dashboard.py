"""deploy/grafana/cloudtap.json against a real Prometheus scraping the test server (and a fake agent).

Prometheus (Debian's ``/usr/bin/prometheus``) scrapes ``/metrics`` on loopback every second with a bearer
token from a credentials file; then every expression of the dashboard, its variables substituted, goes
through ``/api/v1/query``: each must parse and evaluate, and the server's must return data.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from metrics_served import Served, free_port
from prometheus_client import CollectorRegistry, start_http_server

from cloudtap.agent.control import AgentCollector
from cloudtap.agent.status import AgentStatus

DASHBOARD = Path(__file__).resolve().parents[3] / "deploy" / "grafana" / "cloudtap.json"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
#: what Grafana puts for the variables (all servers, all agents) and its interval macros
VARIABLES = {"instance": ".*", "agent": ".*", "__rate_interval": "1m", "__interval": "15s", "__range": "5m",
             "datasource": "prometheus"}  # fmt: skip
#: server panels with nothing to show after the fixture's traffic (no 5xx, nothing dropped by the budget)
EMPTY_HERE = {"Dropped by the disk budget"}


def expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """``(panel title, expr)`` of every target, nested row panels included."""
    found = []
    for panel in dashboard["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            found += [(inner["title"], t["expr"]) for t in inner.get("targets", [])]
    return found


def substitute(expr: str) -> str:
    """``$name`` / ``${name}`` replaced as Grafana would (unknown variables fail the test)."""
    return re.sub(r"\$\{?(\w+)\}?", lambda m: VARIABLES[m.group(1)], expr)


class _Agent:
    """An agent's status whose counters grow at each scrape (rates have something to show)."""

    def __init__(self) -> None:
        self.n = 0

    def status(self) -> AgentStatus:
        self.n += 1
        n = self.n
        return AgentStatus(
            agent_id="agent-hv-m1", mode="live", capturing=True, paused_by=[], uptime_s=n,
            interfaces={"tap0": {"packets": 100 * n, "kernel_drops": n}}, captured_packets=100 * n,
            captured_bytes=90_000 * n, kernel_drops=n, filter_drops=0, duplicates=0, pps_limit_drops=0,
            meter_drops=0, active_flows=10, flow_table_capacity=1000, records=5 * n, record_bytes=500 * n,
            wire_reduction=180.0, cpu_percent=3.0, rss_bytes=50 << 20, load1=0.5, breaker_trips=0,
        )  # fmt: skip


@pytest.fixture
def fake_agent() -> Iterator[int]:
    """An agent's /metrics (its own collector) on a loopback port."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AgentCollector(_Agent()))  # type: ignore[arg-type]
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    yield port
    server.shutdown()
    thread.join(10)


@pytest.fixture
def prometheus(served: Served, fake_agent: int, tmp_path: Path) -> Iterator[str]:
    if not Path(PROMETHEUS).is_file():
        pytest.skip("prometheus is not installed (Debian package 'prometheus')")
    token = served.viewer["Authorization"].removeprefix("Bearer ")
    (tmp_path / "token").write_text(token)
    (tmp_path / "token").chmod(0o600)
    server = served.url.removeprefix("http://")
    (tmp_path / "prometheus.yml").write_text(json.dumps({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": "cloudtap-server", "metrics_path": "/metrics", "static_configs": [{"targets": [server]}],
             "authorization": {"type": "Bearer", "credentials_file": str(tmp_path / "token")}},
            {"job_name": "cloudtap-agents", "static_configs": [{"targets": [f"127.0.0.1:{fake_agent}"]}]},
        ],
    }))  # fmt: skip
    port = free_port()
    proc = subprocess.Popen(
        [PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=(tmp_path / "prometheus.log").open("wb"),
    )  # fmt: skip
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def query(url: str, expr: str) -> dict[str, Any]:
    r = httpx.get(url + "/api/v1/query", params={"query": expr}, timeout=30)
    body: dict[str, Any] = r.json()
    assert r.status_code == 200 and body["status"] == "success", (expr, r.status_code, body)
    return body


def wait_for_scrapes(url: str, scrapes: int = 4, timeout_s: float = 90) -> None:
    """Until both jobs were scraped successfully ``scrapes`` times."""
    deadline = time.monotonic() + timeout_s
    expr = f"min(sum_over_time(up[5m])) >= {scrapes} and count(up) == 2"
    while time.monotonic() < deadline:
        try:
            if query(url, expr)["data"]["result"]:
                return
        except (httpx.HTTPError, ValueError):
            pass  # not listening yet
        time.sleep(0.5)
    raise AssertionError(f"Prometheus did not scrape both targets {scrapes} times in {timeout_s:.0f} s")


@pytest.mark.slow
def test_every_dashboard_expression_evaluates_on_the_scraped_metrics(prometheus: str) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    found = expressions(dashboard)
    assert len(found) >= 40
    wait_for_scrapes(prometheus)
    empty = []
    for title, expr in found:
        result = query(prometheus, substitute(expr))["data"]["result"]
        if not result and title not in EMPTY_HERE:
            empty.append(f"{title}: {expr}")
    assert not empty, "expressions with no data:\n" + "\n".join(empty)
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":  # label_values(metric, label): the values Grafana would list
            metric, label = re.fullmatch(r"label_values\((\w+), (\w+)\)", variable["query"]["query"]).groups()
            r = httpx.get(prometheus + f"/api/v1/label/{label}/values", params={"match[]": metric}, timeout=30)
            assert r.status_code == 200 and r.json()["data"], (variable["name"], r.text)


def test_dashboard_is_importable_as_is() -> None:
    """A Grafana dashboard model: no id, a uid, a datasource variable every panel uses, unique panel ids."""
    dashboard = json.loads(DASHBOARD.read_text())
    assert "id" not in dashboard and dashboard["uid"] and dashboard["schemaVersion"] >= 30
    names = [v["name"] for v in dashboard["templating"]["list"]]
    assert names == ["datasource", "instance", "agent"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
    for title, expr in expressions(dashboard):
        substitute(expr)  # every variable it names is one the dashboard defines (or a Grafana macro)
        assert "cloudtap_" in expr, title

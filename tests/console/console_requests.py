"""Application requests planted into the console tests' server: one HTTP service that gets slow in the seed case's
incident window (``from console_requests import plant_requests``).

web-02 (10.10.1.15) calls app-04 (10.10.1.33) on port 9443 over the seed case's three hours: ``GET /api/cart``
answers in ~2 ms, ``POST /api/report`` in ~3 ms, but ~400 ms in 01:55-02:10 (the window the incident tests use);
some requests fail (404, 500, timeouts). The records are ``L7_DTYPE`` rows shipped as the agent ships them
(:func:`cloudtap.l7.records.requests_to_arrow` plus the agent's annotations), POSTed to ``/api/v1/ingest`` as the
admin (who may import any agent's batches); the server's inventory tags them like an agent's. A fixed agent name
and sequence number make the batch idempotent: a second planting (a reused dev server) stores nothing.
"""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

import numpy as np
import pyarrow as pa

from cloudtap.agent.identity import ObservationPoints
from cloudtap.l7.records import requests_to_arrow
from cloudtap.schema.address import from_text
from cloudtap.schema.request import (
    L7_HTTP,
    REQ_CLIENT_ERROR,
    REQ_OK,
    REQ_SERVER_ERROR,
    REQ_TIMEOUT,
    REQF_TCP,
    empty_requests,
)
from cloudtap.ship.wire import encode_batch

NS = 1_000_000_000
CLIENT, SERVER, PORT = "10.10.1.15", "10.10.1.33", 9443
WINDOW = {"wfrom": "2026-11-20T01:55:00Z", "wto": "2026-11-20T02:10:00Z"}
AGENT = "console-requests-test"
RESOURCES = (("GET", "/api/cart", 2.0), ("POST", "/api/report", 3.0), ("GET", "/api/missing", 1.0))


def _epoch_ns(iso: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()) * NS


def planted(start: str, end: str, n: int = 6000, seed: int = 13) -> np.ndarray:
    """``n`` requests web-02 -> app-04:9443 between ``start`` and ``end`` (ISO); slow reports in the window."""
    rng = np.random.default_rng(seed)
    t0, t1 = _epoch_ns(start), _epoch_ns(end)
    w0, w1 = _epoch_ns(WINDOW["wfrom"]), _epoch_ns(WINDOW["wto"])
    r = empty_requests(n)
    r["req_ns"] = np.sort(rng.integers(t0, t1, n))
    which = rng.integers(0, len(RESOURCES), n)
    median_ms = np.array([m for _, _, m in RESOURCES])[which]
    slow = (which == 1) & (r["req_ns"] >= w0) & (r["req_ns"] < w1)
    median_ms = np.where(slow, 400.0, median_ms)
    latency = np.maximum(1, (median_ms * 1000 * rng.lognormal(0.0, 0.3, n)).astype(np.int64))
    status = np.full(n, REQ_OK, np.uint8)
    code = np.full(n, 200, np.int32)
    status[which == 2], code[which == 2] = REQ_CLIENT_ERROR, 404
    failed = (which == 1) & (rng.random(n) < 0.04)
    status[failed], code[failed] = REQ_SERVER_ERROR, 500
    timeout = rng.random(n) < 0.003
    status[timeout], code[timeout], latency[timeout] = REQ_TIMEOUT, -1, -1
    r["latency_us"] = latency
    r["resp_ns"] = np.where(timeout, 0, r["req_ns"] + latency * 1000)
    r["status"], r["code"] = status, code
    r["request_type"] = np.array([t.encode() for t, _, _ in RESOURCES], "S16")[which]
    r["resource"] = np.array([p.encode() for _, p, _ in RESOURCES], "S160")[which]
    r["host"] = b"app-04.shop"
    r["client_hi"], r["client_lo"] = from_text(CLIENT)
    r["server_hi"], r["server_lo"] = from_text(SERVER)
    r["client_port"] = rng.integers(32768, 61000, n)
    r["server_port"], r["l7_proto"], r["proto"], r["flags"], r["interface"] = PORT, L7_HTTP, 6, REQF_TCP, 1
    return r


def request_table(records: np.ndarray) -> pa.Table:
    """The ``requests`` stream an agent ships for ``records``: Arrow columns plus its annotations."""
    points = ObservationPoints()
    points.register("vnet7", vm_mac="52:54:00:00:09:43", domain="web-02")
    table = points.annotate(requests_to_arrow(records))
    return table.append_column("agent_id", pa.array([AGENT] * table.num_rows, pa.string()))


def plant_requests(console: Any) -> dict[str, Any]:
    """Ship the planted requests to ``console``'s server and wait until its drill-down sees them.

    Returns:
        the drill-down API's answer for the edge over the incident window (what the page must show).
    """
    frame = encode_batch(
        AGENT, 1, {"requests": request_table(planted(console.scenario_start, console.scenario_end))}
    )
    req = urllib.request.Request(
        console.url + "/api/v1/ingest", data=frame, method="POST",
        headers={"Authorization": f"Bearer {console.admin_token()}", "Content-Type": "application/octet-stream"},
    )  # fmt: skip
    with urllib.request.urlopen(req, timeout=120, context=console._context()) as resp:  # noqa: S310 - the test server
        json.loads(resp.read())
    body = {"time_from": WINDOW["wfrom"], "time_to": WINDOW["wto"], "limit": 8, "metric": "latency_p99",
            "target": {"client_ip": CLIENT, "server_ip": SERVER, "port": PORT}}  # fmt: skip
    deadline = time.monotonic() + 60
    while True:
        drill = console.call("POST", "/api/v1/analysis/drill", body)
        if drill["slowest"] or time.monotonic() > deadline:
            return drill  # type: ignore[no-any-return]
        time.sleep(0.5)

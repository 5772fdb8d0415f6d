"""Agent-shaped ``requests`` batches for the store, query and findings tests: planted ``L7_DTYPE`` records
(known edges, latencies and outcomes) annotated like ``RecordOutput`` does."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from store_batches import annotate

from cloudtap.l7.records import requests_to_arrow
from cloudtap.schema.request import (
    L7_HTTP,
    REQ_CLIENT_ERROR,
    REQ_OK,
    REQ_SERVER_ERROR,
    REQ_TIMEOUT,
    REQ_UNANSWERED,
    empty_requests,
)

NS = 1_000_000_000
#: 2026-01-05 10:00:00 UTC: planted requests start here.
START_NS = 1_767_607_200 * NS
V4_MAPPED = 0xFFFF_0000_0000
#: Planted clients and servers: 10.0.0.<n> and 10.0.1.<n> (IPv4-mapped).
PATHS = ("/api/users", "/api/orders", "/health", "/api/orders/export")


def ip4(a: int, b: int, c: int, d: int) -> int:
    """Lower 64 bits of the IPv4-mapped address a.b.c.d."""
    return V4_MAPPED | (a << 24) | (b << 16) | (c << 8) | d


def planted_requests(
    n: int,
    seed: int = 0,
    start_ns: int = START_NS,
    span_s: float = 180.0,
    clients: int = 3,
    servers: int = 2,
    latency_us: float = 2_000.0,
    client_net: int = 0,
    server_net: int = 1,
) -> np.ndarray:
    """``n`` HTTP requests over ``span_s`` seconds from ``start_ns`` between 10.0.<client_net>.(1..clients)
    and 10.0.<server_net>.(1..servers):80, lognormal latencies around ``latency_us``, every outcome present
    (about 80 % ok, 6 % client errors, 4 % server errors, 6 % timeouts, 4 % unanswered)."""
    rng = np.random.default_rng(seed)
    r = empty_requests(n)
    r["req_ns"] = start_ns + np.sort(rng.integers(0, int(span_s * NS), n))
    status = rng.choice(
        [REQ_OK, REQ_CLIENT_ERROR, REQ_SERVER_ERROR, REQ_TIMEOUT, REQ_UNANSWERED],
        n,
        p=[0.8, 0.06, 0.04, 0.06, 0.04],
    ).astype(np.uint8)
    answered = status <= REQ_SERVER_ERROR
    lat = np.maximum(1, rng.lognormal(np.log(latency_us), 0.6, n)).astype(np.int64)
    r["latency_us"] = np.where(answered, lat, -1)
    r["resp_ns"] = np.where(answered, r["req_ns"] + lat * 1000, 0)
    r["status"] = status
    r["code"] = np.select(
        [status == REQ_OK, status == REQ_CLIENT_ERROR, status == REQ_SERVER_ERROR], [200, 404, 503], -1
    )
    r["client_lo"] = [ip4(10, 0, client_net, 1 + i) for i in rng.integers(0, clients, n)]
    r["server_lo"] = [ip4(10, 0, server_net, 1 + i) for i in rng.integers(0, servers, n)]
    r["client_port"] = rng.integers(30_000, 60_000, n)
    r["server_port"] = 80
    r["l7_proto"] = L7_HTTP
    r["proto"] = 6
    r["request_type"] = b"GET"
    r["resource"] = np.array([p.encode() for p in PATHS], "S160")[rng.integers(0, len(PATHS), n)]
    r["host"] = b"shop.example"
    return r


def request_batch(
    records: np.ndarray, agent_id: str, interface: str = "vnet0", domain: str = "vm-a"
) -> pa.Table:
    """The ``requests`` stream an agent ships for ``records`` (annotated)."""
    return annotate(requests_to_arrow(records), agent_id, interface, domain)

"""Application requests for the request-metric tests: three services over one hour, shop -> db slowing down.

2025-11-21 10:00-11:00 UTC. ``shop`` (project ``shop``) queries ``db`` (MySQL, port 3306; both in
``shop``) and ``cache`` (Redis, 6379, project ``other``); ``web`` (``other``) calls ``shop`` over HTTP
(port 80). shop -> db answers in ~2 ms until 10:30 and ~20 ms after (the others stay steady); some of
its INSERTs fail with a duplicate key (1062 / 23000), a few requests time out; web -> shop has 404s and
500s. shop -> db is seen by two agents (``hv-1`` and ``hv-2``: every request twice); the rest by one.

Records are ``L7_DTYPE`` rows, shipped as :func:`cloudtap.l7.records.requests_to_arrow` tables plus the
agent annotations and the identity ids an inventory would fill. :class:`RequestData` keeps each request
once (``rec``, ``client``, ``server``) for numpy oracles.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from cloudtap.l7.records import requests_to_arrow
from cloudtap.schema.address import from_text
from cloudtap.schema.request import (
    L7_HTTP,
    L7_MYSQL,
    L7_REDIS,
    REQ_CLIENT_ERROR,
    REQ_OK,
    REQ_SERVER_ERROR,
    REQ_TIMEOUT,
    REQF_TCP,
    empty_requests,
)
from cloudtap.server.store.base import BatchKey

NS = 1_000_000_000
T0_S = 1_763_719_200  #: 2025-11-21T10:00:00Z
T0 = T0_S * NS
MID = T0 + 1800 * NS  #: shop -> db slows down here
END = T0 + 3600 * NS
WINDOW = {"time_from": "2025-11-21T10:30:00Z", "time_to": "2025-11-21T11:00:00Z"}
HOUR = {"time_from": "2025-11-21T10:00:00Z", "time_to": "2025-11-21T11:00:00Z"}
#: VM -> (project, host, IP).
VMS = {
    "shop": ("shop", "hv-1", "10.1.0.10"),
    "db": ("shop", "hv-2", "10.1.0.20"),
    "web": ("other", "hv-3", "10.2.0.10"),
    "cache": ("other", "hv-3", "10.2.0.20"),
}
IDS: dict[str, dict[str, int]] = {
    "project": {"shop": 1, "other": 2},
    "host": {"hv-1": 1, "hv-2": 2, "hv-3": 3},
    "vm": {name: i + 1 for i, name in enumerate(VMS)},
}
KEY = BatchKey("request-analysis-tests", 1)


@dataclass(frozen=True)
class Service:
    """Requests client -> server:port of one protocol."""

    client: str
    server: str
    port: int
    l7: int
    resources: tuple[tuple[str, str, float], ...]  #: (request type, resource, latency factor)
    latency_ms: tuple[float, float]  #: median before / after MID
    agents: tuple[str, ...]
    n: int


SERVICES = (
    Service("shop", "db", 3306, L7_MYSQL, (("SELECT", "SELECT * FROM orders WHERE id = ?", 1.0),
            ("UPDATE", "UPDATE stock SET n = ? WHERE id = ?", 2.0), ("INSERT", "INSERT INTO audit VALUES (?)", 0.5)),
            (2.0, 20.0), ("hv-1", "hv-2"), 3000),
    Service("shop", "cache", 6379, L7_REDIS, (("GET", "GET", 1.0), ("SET", "SET", 1.5)), (0.3, 0.3), ("hv-1",), 2400),
    Service("web", "shop", 80, L7_HTTP, (("GET", "/api/cart", 1.0), ("POST", "/api/order", 3.0)), (5.0, 5.0),
            ("hv-3",), 1800),
)  # fmt: skip


@dataclass
class RequestData:
    """Each request once (numpy oracles) and the tables as the agents shipped them."""

    rec: np.ndarray  #: L7_DTYPE, one row per request
    client: np.ndarray  #: client VM name per request
    server: np.ndarray  #: server VM name per request
    tables: list[pa.Table]  #: one ``requests`` table per agent

    def mask(
        self, client: str | None = None, server: str | None = None, t0: int = T0, t1: int = END
    ) -> np.ndarray:
        """Requests of an edge (or of any client / server) with ``t0 <= req < t1``."""
        m = (self.rec["req_ns"] >= t0) & (self.rec["req_ns"] < t1)
        if client is not None:
            m &= self.client == client
        if server is not None:
            m &= self.server == server
        return m

    def names(self) -> Any:
        from dict_names import DictNames

        return DictNames(IDS)


def _service(rng: np.random.Generator, s: Service) -> np.ndarray:
    rec = empty_requests(s.n)
    rec["req_ns"] = np.sort(rng.integers(T0, END, s.n))
    which = rng.integers(0, len(s.resources), s.n)
    factor = np.array([f for _, _, f in s.resources])[which]
    median_ms = np.where(rec["req_ns"] < MID, s.latency_ms[0], s.latency_ms[1]) * factor
    latency = np.maximum(1, (median_ms * 1000 * rng.lognormal(0.0, 0.4, s.n)).astype(np.int64))
    status = np.full(s.n, REQ_OK, np.uint8)
    code = np.zeros(s.n, np.int32)
    error = np.zeros(s.n, "S16")
    u = rng.random(s.n)
    if s.l7 == L7_MYSQL:
        dup = (u < 0.06) & (which == 2)
        status[dup], code[dup], error[dup] = REQ_CLIENT_ERROR, 1062, b"23000"
    elif s.l7 == L7_HTTP:
        code[:] = 200
        status[u < 0.03], code[u < 0.03] = REQ_SERVER_ERROR, 500
        nf = (u >= 0.03) & (u < 0.05)
        status[nf], code[nf] = REQ_CLIENT_ERROR, 404
    timeout = rng.random(s.n) < 0.005
    status[timeout], code[timeout] = REQ_TIMEOUT, -1
    latency[timeout] = -1
    rec["latency_us"] = latency
    rec["resp_ns"] = np.where(timeout, 0, rec["req_ns"] + latency * 1000)
    rec["status"], rec["code"], rec["error"] = status, code, error
    rec["request_type"] = np.array([t.encode() for t, _, _ in s.resources], "S16")[which]
    rec["resource"] = np.array([r.encode() for _, r, _ in s.resources], "S160")[which]
    if s.l7 == L7_HTTP:
        rec["host"] = b"shop.example"
    c_hi, c_lo = from_text(VMS[s.client][2])
    s_hi, s_lo = from_text(VMS[s.server][2])
    rec["client_hi"], rec["client_lo"], rec["server_hi"], rec["server_lo"] = c_hi, c_lo, s_hi, s_lo
    rec["client_port"] = rng.integers(32768, 61000, s.n)
    rec["server_port"], rec["l7_proto"], rec["proto"], rec["flags"], rec["interface"] = (
        s.port,
        s.l7,
        6,
        REQF_TCP,
        1,
    )
    return rec


def _annotated(rec: np.ndarray, client: np.ndarray, server: np.ndarray, agent: str) -> pa.Table:
    """The agent's table: records, annotations, identity ids (as the inventory tags them at ingest)."""
    t = requests_to_arrow(rec)
    n = len(rec)
    for name, value in (("agent_id", agent), ("interface_name", "tap0"), ("vm_domain", ""), ("vm_mac", "")):
        t = t.append_column(name, pa.array([value] * n, pa.string()))
    for side, who in (("client", client), ("server", server)):
        for kind, pos in (("project", 0), ("host", 1)):
            lookup = {vm: IDS[kind][VMS[vm][pos]] for vm in VMS}
            t = t.append_column(
                f"{side}_{kind}_id", pa.array(np.vectorize(lookup.get)(who).astype(np.uint32))
            )
        t = t.append_column(f"{side}_vm_id", pa.array(np.vectorize(IDS["vm"].get)(who).astype(np.uint32)))
    return t


def build(seed: int = 13) -> RequestData:
    """The requests (deterministic)."""
    rng = np.random.default_rng(seed)
    parts = [(s, _service(rng, s)) for s in SERVICES]
    rec = np.concatenate([r for _, r in parts])
    client = np.concatenate([np.full(len(r), s.client, object) for s, r in parts])
    server = np.concatenate([np.full(len(r), s.server, object) for s, r in parts])
    agents = sorted({a for s in SERVICES for a in s.agents})
    tables = []
    for agent in agents:
        seen = np.concatenate([np.full(len(r), agent in s.agents) for s, r in parts])
        tables.append(_annotated(rec[seen], client[seen], server[seen], agent))
    return RequestData(rec, client.astype(str), server.astype(str), tables)


def open_request_store(dsn: str, data: RequestData, database: str = "analyse_requests") -> Any:
    """A migrated store holding ``data`` (every agent's table, as the ingest stores them)."""
    from cloudtap.server.store.clickhouse import ClickHouseStore

    store = ClickHouseStore(dsn, database=database)
    store.migrate()
    for i, t in enumerate(data.tables):
        store.insert({"requests": t}, BatchKey(KEY.agent_id, KEY.seq + i))
    return store

"""Application payloads of services: templates, their byte tables for the kernels, minimum sizes.

A service with ``app: pgsql|mysql|http|redis|dns`` sends real protocol messages built by
:mod:`cloudtap.synth._messages`. This module turns its templates (or the protocol's defaults) into
the tables the kernels read, says how small a message can be, and describes each error variant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from cloudtap.synth import _dtypes as dt
from cloudtap.synth._messages import (
    HEAD_BYTES,
    LITERAL,
    N_ERRORS,
    S_COUNT,
    S_FIRST,
    S_HOST_LEN,
    S_HOST_OFF,
    T_ARG,
    T_LEN,
    T_OFF,
    message_parts,
)

if TYPE_CHECKING:
    from cloudtap.synth.scenario import ServiceSpec

_SQL = [
    "SELECT * FROM orders WHERE id = {n}",
    "SELECT id, status, total FROM orders WHERE customer_id = {n} ORDER BY created_at DESC",
    "UPDATE carts SET updated_at = now() WHERE id = {n}",
    "INSERT INTO order_items (order_id, sku, qty) VALUES ({n}, 'SKU-{n}', 1)",
    "SELECT count(*) FROM sessions WHERE user_id = {n}",
]
DEFAULT_TEMPLATES: dict[str, list[str]] = {
    "pgsql": _SQL,
    "mysql": _SQL,
    "http": [
        "GET /api/orders/{n}",
        "GET /api/products?page={n}",
        "POST /api/cart/{n}/items",
        "GET /healthz",
        "PUT /api/users/{n}/profile",
    ],  # fmt: skip
    "redis": ["GET session:{n}", "SET cart:{n} v", "HGETALL user:{n}", "INCR counter:{n}", "DEL lock:{n}"],
    "dns": [
        "A api.shop.internal",
        "A db.shop.internal",
        "AAAA registry.infra.internal",
        "A node-{n}.cluster.internal",
    ],
}
_QTYPES = {"A": 1, "AAAA": 28}


@dataclass(frozen=True)
class ErrorVariant:
    """One error reply of a protocol: what the parser should report for it."""

    status: str  #: client_error or server_error
    code: int  #: HTTP status, DNS rcode, MySQL error number (0 otherwise)
    error: str  #: SQLSTATE, Redis error word, DNS rcode name ("" for HTTP)


#: Error variants 1..N_ERRORS of each protocol, in the kernels' order.
ERRORS: dict[str, tuple[ErrorVariant, ...]] = {
    "http": (
        ErrorVariant("client_error", 404, ""),
        ErrorVariant("server_error", 500, ""),
        ErrorVariant("server_error", 503, ""),
    ),  # fmt: skip
    "pgsql": (
        ErrorVariant("client_error", 0, "23505"),
        ErrorVariant("server_error", 0, "40001"),
        ErrorVariant("server_error", 0, "57014"),
    ),  # fmt: skip
    "mysql": (
        ErrorVariant("client_error", 1062, "23000"),
        ErrorVariant("server_error", 1213, "40001"),
        ErrorVariant("server_error", 1205, "HY000"),
    ),  # fmt: skip
    "redis": (
        ErrorVariant("server_error", 0, "ERR"),
        ErrorVariant("server_error", 0, "WRONGTYPE"),
        ErrorVariant("server_error", 0, "OOM"),
    ),  # fmt: skip
    "dns": (
        ErrorVariant("client_error", 3, "NXDomain"),
        ErrorVariant("server_error", 2, "ServFail"),
        ErrorVariant("server_error", 5, "Refused"),
    ),  # fmt: skip
}
#: What an answered request without error reports: (code, error).
OK_REPLY = {"http": 200, "dns": 0, "mysql": 0, "pgsql": 0, "redis": 0}
assert all(len(v) == N_ERRORS for v in ERRORS.values())


def templates_of(spec: ServiceSpec) -> list[str]:
    """The service's templates, or its protocol's defaults."""
    return list(spec.templates or DEFAULT_TEMPLATES[spec.app])


def check_app(spec: ServiceSpec) -> None:
    """Check a service's templates against its protocol (raises ValueError, for the schema)."""
    if (spec.app == "dns") != (spec.proto == "udp") or spec.proto == "icmp":
        raise ValueError(
            f"service {spec.name!r}: app {spec.app} needs proto {'udp' if spec.app == 'dns' else 'tcp'}"
        )
    for text in templates_of(spec):
        where = f"service {spec.name!r}: template {text!r}"
        if not text.isascii() or not text.isprintable() or not 1 <= len(text.replace("{n}", "99999")) <= 120:
            raise ValueError(f"{where}: use 1..120 printable ASCII characters")
        words = text.split(" ")
        if spec.app == "http" and (len(words) != 2 or not words[0].isalpha() or not words[1].startswith("/")):
            raise ValueError(f"{where}: write 'METHOD /path'")
        if spec.app == "dns" and (len(words) != 2 or words[0] not in _QTYPES or ".." in words[1]):
            raise ValueError(f"{where}: write 'A name' or 'AAAA name'")
        if spec.app == "redis" and (not words[0].isalpha() or any(not w for w in words)):
            raise ValueError(f"{where}: write 'COMMAND arg ...' with single spaces")


@dataclass
class AppTables:
    """What the payload kernels read: templates in one byte pool, one row per service."""

    pool: np.ndarray  #: uint8: template bytes (literal marker \\x01), then host names
    tmpl: np.ndarray  #: int64 [n_templates, 3]: offset, length, argument (DNS qtype)
    svc: np.ndarray  #: int64 [n_services, 5]: app, first template, count, host offset, host length
    texts: list[str]  #: each template's text with the marker
    apps: list[str]  #: each service row's protocol ("none" ...)
    hosts: list[str]  #: each service row's HTTP Host


def build_tables(specs: list[tuple[str, ServiceSpec | None]]) -> AppTables:
    """Tables for the behaviour rows (services and incidents, ``None`` for the latter)."""
    texts: list[str] = []
    tmpl_rows: list[tuple[int, int, int]] = []
    svc = np.zeros((max(len(specs), 1), 5), np.int64)
    pool = bytearray()
    apps: list[str] = []
    hosts: list[str] = []
    for i, (name, spec) in enumerate(specs):
        app = spec.app if spec is not None else "none"
        apps.append(app)
        hosts.append(name if app == "http" else "")
        if spec is None or app == "none":
            continue
        svc[i, 0] = dt.APP_CODES[app]
        svc[i, S_FIRST] = len(texts)
        for text in templates_of(spec):
            marked = text.replace("{n}", chr(LITERAL))
            arg = _QTYPES.get(marked.split(" ")[0], 0) if app == "dns" else 0
            tmpl_rows.append((len(pool), len(marked), arg))
            texts.append(marked)
            pool += marked.encode()
        svc[i, S_COUNT] = len(texts) - svc[i, S_FIRST]
        svc[i, S_HOST_OFF], svc[i, S_HOST_LEN] = len(pool), len(name)
        pool += name.encode()
    tmpl = np.asarray(tmpl_rows or [(0, 0, 0)], np.int64).reshape(-1, 3)
    return AppTables(np.frombuffer(bytes(pool) or b"\0", np.uint8).copy(), tmpl, svc, texts, apps, hosts)


def min_sizes(tables: AppTables, row: int) -> tuple[int, int]:
    """Smallest request and response (bytes) every template and error variant of a row fits in."""
    app = int(tables.svc[row, 0])
    if app == 0:
        return 0, 0
    head = np.zeros(HEAD_BYTES, np.uint8)
    tail = np.zeros(64, np.uint8)
    need = [0, 0]
    first, count = int(tables.svc[row, S_FIRST]), int(tables.svc[row, S_COUNT])
    for t in range(first, first + count):
        for is_resp in (0, 1):
            for err in range(N_ERRORS + 1) if is_resp else (0,):
                hl, tl, _ = message_parts(head, tail, app, bool(is_resp), tables.pool, tables.tmpl,
                                          tables.svc[row], t, 99999, err, 0xFFFF, 10_000_000)  # fmt: skip
                need[is_resp] = max(need[is_resp], hl + tl + 1)
    return need[0], need[1]


__all__ = ["DEFAULT_TEMPLATES", "ERRORS", "OK_REPLY", "AppTables", "ErrorVariant", "T_ARG", "T_LEN", "T_OFF",
           "build_tables", "check_app", "min_sizes", "templates_of"]  # fmt: skip

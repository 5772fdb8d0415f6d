"""Selector: which traffic an analysis looks at (VM, IP, peer, port, protocol, project), as edge-table SQL.

Entities are given by name (resolved through the :class:`~cloudtap.inventory.names.NameResolver` as
they were at the analysed moment), as ``id:<n>`` or as a bare integer id. ``ip`` and ``peer`` take an
address or a CIDR. The subject (``vm`` and/or ``ip``) matches either side of an edge; ``peer`` then
matches the other side of the same edge.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cloudtap.inventory.names import NameResolver
from cloudtap.server.analyse._sql import Params, as_v6, parse_proto
from cloudtap.server.analyse.errors import AnalysisError
from cloudtap.server.store.ddl import ident

_ID = re.compile(r"(?:id:)?(\d{1,10})")
_NAME = re.compile(r"[\w.*:@/+-]{1,256}")


class Selector(BaseModel):
    """Filter of an analysis (all given fields apply)."""

    model_config = ConfigDict(extra="forbid")

    vm: str | None = Field(None, description="VM name, id:<n> or id (either side)")
    ip: str | None = Field(None, description="IP or CIDR (either side)")
    peer: str | None = Field(None, description="IP or CIDR on the other side of the vm/ip")
    peer_vm: str | None = Field(None, description="VM name or id on the other side of the vm/ip")
    port: int | None = Field(None, ge=0, le=65535, description="server port")
    proto: str | int | None = Field(None, description="tcp, udp, icmp... or a number")
    project: str | None = Field(None, description="project name or id (either side)")
    host: str | None = Field(None, description="hypervisor name or id (either side)")
    client_ip: str | None = Field(None, description="client IP or CIDR")
    server_ip: str | None = Field(None, description="server IP or CIDR")

    @field_validator("vm", "peer_vm", "project", "host")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and not _NAME.fullmatch(v.strip()):
            raise ValueError(f"{v!r} is not a name or id:<n>")
        return v.strip() if v is not None else v

    @field_validator("proto")
    @classmethod
    def _proto(cls, v: str | int | None) -> int | None:
        return None if v is None else parse_proto(v)

    def is_empty(self) -> bool:
        """True when nothing is filtered."""
        return not any(v is not None for v in self.model_dump().values())

    def describe(self) -> str:
        """``vm=db-01 port=873``."""
        return " ".join(f"{k}={v}" for k, v in self.model_dump().items() if v is not None) or "all traffic"


def resolve_ids(names: NameResolver, kind: str, value: str, at_ns: int | None, field: str) -> list[int]:
    """Ids of ``value`` (a name, a glob, ``id:<n>`` or an integer) of entity ``kind``.

    Raises:
        AnalysisError: the name matches nothing at ``at_ns``.
    """
    m = _ID.fullmatch(value)
    if m:
        return [int(m.group(1))]
    ids = sorted(set(names.ids(kind, value, at_ns)))
    if not ids:
        raise AnalysisError(
            f"{field}: no {kind} named {value!r} at that time (without an inventory, give id:<n>)", field
        )
    return ids


def _ip_match(params: Params, column: str, value: str, field: str) -> str:
    text = value.strip()
    try:
        if "/" in text:
            net = ipaddress.ip_network(text, strict=False)
            lo = params.bind(as_v6(net.network_address), "String")
            hi = params.bind(as_v6(net.broadcast_address), "String")
            return f"{ident(column)} BETWEEN toIPv6({lo}) AND toIPv6({hi})"
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise AnalysisError(f"{field}: {value!r} is not an IP address or CIDR", field) from None
    return f"{ident(column)} = toIPv6({params.bind(as_v6(ip), 'String')})"


def _ids_match(params: Params, column: str, ids: Iterable[int]) -> str:
    return f"{ident(column)} IN ({', '.join(params.bind(int(i), 'UInt32') for i in ids)})"


def _and(parts: list[str]) -> str:
    return "(" + " AND ".join(parts) + ")" if parts else "1"


def edge_where(sel: Selector, params: Params, names: NameResolver, at_ns: int | None = None) -> list[str]:
    """SQL conditions selecting ``sel`` on an edge table (``client_*`` / ``server_*`` columns).

    Raises:
        AnalysisError: a bad address, an unknown name.
    """
    sides, rest = edge_where_sides(sel, params, names, at_ns)
    return ([f"({sides[0]} OR {sides[1]})"] if sides else []) + rest


def edge_where_sides(sel: Selector, params: Params, names: NameResolver,
                     at_ns: int | None = None) -> tuple[tuple[str, str] | None, list[str]]:  # fmt: skip
    """:func:`edge_where` with the subject's two sides apart: ((as client, as server) or None, the rest).

    A query can then read the two sides as two index-friendly scans (the client side by the primary key,
    the server side by its bloom filter) where one ``OR`` would scan the whole range.
    """
    where: list[str] = []
    sides = None
    vm_ids = resolve_ids(names, "vm", sel.vm, at_ns, "vm") if sel.vm else None
    peer_vm_ids = resolve_ids(names, "vm", sel.peer_vm, at_ns, "peer_vm") if sel.peer_vm else None

    def subject(side: str) -> list[str]:
        parts = []
        if sel.ip:
            parts.append(_ip_match(params, f"{side}_ip", sel.ip, "ip"))
        if vm_ids is not None:
            parts.append(_ids_match(params, f"{side}_vm_id", vm_ids))
        return parts

    def peer(side: str) -> list[str]:
        parts = []
        if sel.peer:
            parts.append(_ip_match(params, f"{side}_ip", sel.peer, "peer"))
        if peer_vm_ids is not None:
            parts.append(_ids_match(params, f"{side}_vm_id", peer_vm_ids))
        return parts

    has_subject, has_peer = bool(sel.ip or vm_ids), bool(sel.peer or peer_vm_ids)
    if has_subject or has_peer:
        sides = (_and(subject("client") + peer("server")), _and(subject("server") + peer("client")))
    for kind in ("project", "host"):
        value = getattr(sel, kind)
        if value:
            ids = resolve_ids(names, kind, value, at_ns, kind)
            where.append(f"({_ids_match(params, f'client_{kind}_id', ids)} OR {_ids_match(params, f'server_{kind}_id', ids)})")
    if sel.client_ip:
        where.append(_ip_match(params, "client_ip", sel.client_ip, "client_ip"))
    if sel.server_ip:
        where.append(_ip_match(params, "server_ip", sel.server_ip, "server_ip"))
    if sel.port is not None:
        where.append(f"server_port = {params.bind(sel.port, 'UInt16')}")
    if sel.proto is not None:
        where.append(f"proto = {params.bind(int(sel.proto), 'UInt8')}")
    return sides, where


def check_request_filter(sel: Selector, field: str = "proto") -> None:
    """Request rollups keep the application protocol, not the IP one: a ``proto`` filter cannot apply.

    Raises:
        AnalysisError: ``proto`` is set.
    """
    if sel.proto is not None:
        raise AnalysisError(
            "request metrics are kept per application protocol, not per IP protocol: drop proto (use port)", field
        )


def subject_side_sql(sel: Selector, params: Params, names: NameResolver, at_ns: int | None = None) -> str | None:
    """SQL that is 1 when the row's *client* is the selector's subject (vm/ip), None without a subject."""
    parts = []
    if sel.ip:
        parts.append(_ip_match(params, "client_ip", sel.ip, "ip"))
    if sel.vm:
        parts.append(_ids_match(params, "client_vm_id", resolve_ids(names, "vm", sel.vm, at_ns, "vm")))
    return _and(parts) if parts else None

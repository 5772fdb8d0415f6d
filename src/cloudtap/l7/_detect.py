"""Protocol detection by content, on the first payload segment of a flow the parser does not know.

Only the start of a request (or, for MySQL, the server greeting) opens a flow: a response alone
says too little. The checks are structural (a request line ending in ``HTTP/1.x``, a DNS header
whose question parses, a RESP array of bulk strings, a MySQL packet or PostgreSQL message whose
length matches the segment); well-known ports only relax the DNS check.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from cloudtap._kernel_opts import KERNEL_OPTS
from cloudtap.l7 import _dns, _http, _mysql, _pgsql, _redis
from cloudtap.schema.request import L7_DNS, L7_HTTP, L7_MYSQL, L7_PGSQL, L7_REDIS


@njit(**KERNEL_OPTS)
def _dns_port(port: int) -> bool:
    return port == 53 or port == 5353 or port == 5355


@njit(**KERNEL_OPTS)
def detect(
    data: np.ndarray, pos: int, end: int, tot_end: int, is_tcp: bool, sport: int, dport: int,
    scratch: np.ndarray,
) -> int:  # fmt: skip
    """L7_* of the segment: positive when its sender is the client, negative when it is the server."""
    dns_port = _dns_port(sport) or _dns_port(dport)
    if not is_tcp:
        if _dns.looks_like_query(data, pos, end, not dns_port, scratch):
            return L7_DNS
        return 0
    first = data[pos]
    if 65 <= first <= 90:
        mlen, _, _ = _http.request_line(data, pos, end, end < tot_end)
        if mlen > 0:
            return L7_HTTP
    if first == 42 and _redis.command_start(data, pos, end):
        return L7_REDIS
    if (first == 81 or first == 80) and _pgsql.looks_like_query(data, pos, end, tot_end):
        return L7_PGSQL
    if _pgsql.startup(data, pos, end, tot_end):
        return L7_PGSQL
    if _mysql.looks_like_command(data, pos, end, tot_end):
        return L7_MYSQL
    if _mysql.greeting(data, pos, end, tot_end):
        return -L7_MYSQL
    if pos + 2 <= end:
        ln = (int(data[pos]) << 8) | int(data[pos + 1])
        whole = ln + 2 == tot_end - pos or (dns_port and 12 <= ln and ln + 2 < tot_end - pos)
        if whole and _dns.looks_like_query(data, pos + 2, min(end, pos + 2 + ln), not dns_port, scratch):
            return L7_DNS
    return 0

"""The application request record (``l7`` stream): one row per request, paired with its response.

Like :mod:`cloudtap.schema.flow`, ``L7_FIELDS`` is the single source of field names. Strings are
fixed-size, NUL-padded byte fields (``S<n>``): a record is one flat numpy row that numba kernels
fill byte by byte and Arrow converts in bulk; text longer than its field is cut (the record says
so in ``flags``). Addresses are two ``uint64`` halves, rendered as text on output.

``req_ns`` / ``resp_ns`` are the capture times of the first segment of the request and of the
response (see ``docs/requests.md``); ``latency_us = (resp_ns - req_ns) / 1000``, -1 without response.
"""

from __future__ import annotations

import numpy as np

# l7_proto values ------------------------------------------------------------------------------
L7_UNKNOWN = 0
L7_HTTP = 1  #: HTTP/1.0 and HTTP/1.1
L7_DNS = 2  #: DNS over UDP or TCP
L7_MYSQL = 3
L7_PGSQL = 4  #: PostgreSQL frontend/backend protocol v3
L7_REDIS = 5  #: RESP2 / RESP3
L7_NOT_L7 = 255  #: flow state only: the flow was looked at and is none of the above
L7_PROTO_NAMES = ("", "http", "dns", "mysql", "pgsql", "redis")

# status values ----------------------------------------------------------------------------------
REQ_OK = 0  #: response seen, not an error
REQ_CLIENT_ERROR = 1  #: HTTP 4xx, DNS FormErr/NXDomain, SQL errors caused by the statement (SQLSTATE 42...)
REQ_SERVER_ERROR = 2  #: HTTP 5xx, DNS ServFail/Refused..., Redis error reply, server-side SQL errors
REQ_TIMEOUT = 3  #: no response within the timeout
REQ_UNANSWERED = 4  #: input ended (or the flow's queue overflowed) before a response or the timeout
REQ_STATUS_NAMES = ("ok", "client_error", "server_error", "timeout", "unanswered")

# flags bit field --------------------------------------------------------------------------------
REQF_RESOURCE_CUT = 1  #: resource longer than its field (or than the captured bytes): cut
REQF_TCP = 2  #: carried over TCP (else UDP)
REQF_SNAPLEN_CUT = 4  #: the request's first segment was cut by the capture's snap length

#: Widths of the string fields (bytes).
REQUEST_TYPE_BYTES = 16
RESOURCE_BYTES = 160
HOST_BYTES = 64
ERROR_BYTES = 16

L7_FIELDS: tuple[tuple[str, str, str], ...] = (
    # name, numpy type, meaning
    ("req_ns", "i8", "first segment of the request, ns since the Unix epoch"),
    ("resp_ns", "i8", "first segment of the response; 0 without response"),
    ("latency_us", "i8", "resp_ns - req_ns in microseconds (floor); -1 without response"),
    ("client_hi", "u8", "client IP (sender of the request), upper 64 bits"),
    ("client_lo", "u8", "client IP, lower 64 bits (IPv4 mapped)"),
    ("server_hi", "u8", "server IP, upper 64 bits"),
    ("server_lo", "u8", "server IP, lower 64 bits (IPv4 mapped)"),
    ("code", "i4", "HTTP status, DNS rcode, MySQL error number; -1 without response, 0 when none applies"),
    ("request_id", "u4", "DNS transaction id, MySQL statement id; 0 otherwise"),
    ("arg_count", "u4", "Redis: arguments after the command; DNS: questions; 0 otherwise"),
    ("client_port", "u2", "client port"),
    ("server_port", "u2", "server port"),
    ("interface", "u2", "observation point (capture interface) of the request"),
    ("l7_proto", "u1", "L7_* protocol"),
    ("proto", "u1", "IP protocol (6 TCP, 17 UDP)"),
    ("status", "u1", "REQ_* outcome"),
    ("flags", "u1", "REQF_* bits"),
    ("request_type", f"S{REQUEST_TYPE_BYTES}", "HTTP method, DNS query type, SQL command, Redis command"),
    ("resource", f"S{RESOURCE_BYTES}", "HTTP path, DNS query name, SQL fingerprint, Redis command"),
    ("host", f"S{HOST_BYTES}", "HTTP Host header; empty for other protocols"),
    ("error", f"S{ERROR_BYTES}", "SQLSTATE, Redis error word, DNS rcode name; empty when none"),
)

L7_DTYPE = np.dtype([(name, typ) for name, typ, _ in L7_FIELDS], align=True)

#: Byte offsets of the string fields inside one ``L7_DTYPE`` row (kernels write them bytewise).
TEXT_OFFSETS = {
    name: int(L7_DTYPE.fields[name][1])  # type: ignore[index]
    for name in ("request_type", "resource", "host", "error")
}


def empty_requests(n: int) -> np.ndarray:
    """Return a zeroed array of ``n`` request records."""
    return np.zeros(n, dtype=L7_DTYPE)

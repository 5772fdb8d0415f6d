"""Record layouts shared by the synthesiser's kernels: the packet plan and the session wire table."""

from __future__ import annotations

import numpy as np

#: One planned packet, before frame assembly. ``dir`` 0 is client to server.
#: TCP: ``flags`` is the TCP flags byte; ICMP: ``flags`` is the ICMP type and ``seq`` the echo sequence.
#: Payload: bytes ``moff .. moff + plen`` of message ``xid`` (exchange number in the session), which is
#: ``mlen`` bytes long (0: not an application message, the payload is fill bytes); ``slow`` 1 when the
#: server's time before this response came from a contention window.
PLAN_DTYPE = np.dtype(
    [
        ("ts", "i8"),
        ("sess", "i4"),
        ("plen", "u4"),
        ("seq", "u4"),
        ("ack", "u4"),
        ("xid", "u4"),
        ("moff", "u4"),
        ("mlen", "u4"),
        ("win", "u2"),
        ("ipid", "u2"),
        ("dir", "u1"),
        ("flags", "u1"),
        ("retrans", "u1"),
        ("proto", "u1"),
        ("slow", "u1"),
    ],
    align=True,
)

#: What frame assembly needs to know about a session (addresses, ports, tunnel).
WIRE_DTYPE = np.dtype(
    [
        ("cmac", "u8"),
        ("smac", "u8"),
        ("chost_mac", "u8"),
        ("shost_mac", "u8"),
        ("cip", "u4"),
        ("sip", "u4"),
        ("chost_ip", "u4"),
        ("shost_ip", "u4"),
        ("chost", "i4"),
        ("shost", "i4"),
        ("tunnel_id", "u4"),
        ("svc", "i4"),
        ("cport", "u2"),
        ("sport", "u2"),
        ("vlan", "u2"),
        ("proto", "u1"),
        ("encap", "u1"),
        ("app", "u1"),
    ],
    align=True,
)

# session kinds
KIND_TCP = 0  #: request/response TCP connection
KIND_BULK = 1  #: one-way paced bulk push (backup)
KIND_SCAN = 2  #: one SYN-scan probe
KIND_UDP = 3  #: UDP request/response conversation
KIND_ICMP = 4  #: ICMP echo conversation

# columns of the per-service parameter table handed to the planning kernels
P_REQ_MIN, P_REQ_MAX = 0, 1
P_REQB_MIN, P_REQB_MAX = 2, 3
P_RESPB_MIN, P_RESPB_MAX = 4, 5
P_THINK_MIN, P_THINK_MAX = 6, 7  # ns
P_SRV_MIN, P_SRV_MAX = 8, 9  # ns
P_LOSS = 10
P_CLOSE_BY_SERVER = 11
P_APP = 12  # APP_* code of the service's payloads
P_ERRORS = 13  # share of requests answered with an error
N_PARAMS = 14

# application protocols of a service's payloads (0: fill bytes)
APP_NONE, APP_HTTP, APP_DNS, APP_MYSQL, APP_PGSQL, APP_REDIS = 0, 1, 2, 3, 4, 5
APP_CODES = {"none": APP_NONE, "http": APP_HTTP, "dns": APP_DNS, "mysql": APP_MYSQL, "pgsql": APP_PGSQL,
             "redis": APP_REDIS}  # fmt: skip

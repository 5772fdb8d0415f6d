"""The edges of a window as numpy columns: one row per client -> server:port/proto, read once per cycle.

Traffic seen by several agents counts once: sums per agent first, then the busiest agent's figures
per edge (the analyses' ``dedup``). Everything downstream is vectorised over these columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cloudtap.server.store.ddl import ident, ip_text_sql

_SUMS = {
    "c2s": "sum(bytes_c2s)", "s2c": "sum(bytes_s2c)", "packets": "sum(packets_c2s + packets_s2c)",
    "opened": "sum(flows_opened)", "failed": "sum(flows_failed)", "retrans": "sum(retrans)",
}  # fmt: skip
_IDS = ("client_project_id", "server_project_id", "client_vm_id", "server_vm_id", "client_subnet_id",
        "server_subnet_id", "server_service_id")  # fmt: skip
KEY_SQL = "cityHash64(client_ip, server_ip, server_port, proto)"
PAIR_SQL = "cityHash64(client_ip, server_ip)"


@dataclass
class Edges:
    """Columns of one window's edges (same length; ``key``/``pair`` are 64-bit hashes of the edge / IP pair)."""

    cols: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.cols["key"])

    def __getitem__(self, name: str) -> np.ndarray:
        found: np.ndarray = self.cols[name]
        return found

    @property
    def bytes(self) -> np.ndarray:
        """Both directions."""
        both: np.ndarray = self.cols["c2s"] + self.cols["s2c"]
        return both

    def row(self, i: int) -> dict[str, Any]:
        """One edge as plain values."""
        return {k: (v[i].item() if hasattr(v[i], "item") else v[i]) for k, v in self.cols.items()}


def edges_sql(database: str, stored: str, by_minute: bool = False) -> str:
    """The per-edge (per-minute when ``by_minute``) aggregation of ``stored`` (alias ``e``) over ``[{t0}, {t1})``."""
    per_agent = ", ".join(f"{expr} AS a_{name}" for name, expr in _SUMS.items())
    ids = ", ".join(f"max({c}) AS i_{c}" for c in _IDS)
    minute = "toUnixTimestamp(toStartOfMinute(time)) AS a_minute, " if by_minute else ""
    group_minute = "a_minute, " if by_minute else ""
    outer_minute = "a_minute AS minute, " if by_minute else ""
    values = ", ".join(f"a_{n}" for n in _SUMS)
    picked = ", ".join(f"tupleElement(v, {i + 1}) AS {name}" for i, name in enumerate(_SUMS))
    outer_ids = ", ".join(f"max(i_{c}) AS {c}" for c in _IDS)
    return (
        f"SELECT {outer_minute}key, any(a_pair) AS pair, any(a_client) AS client_ip, any(a_server) AS server_ip, "
        f"any(a_port) AS server_port, any(a_proto) AS proto, {outer_ids}, "
        f"argMax(tuple({values}), a_c2s + a_s2c) AS v, {picked}, count() AS agents FROM ("
        f"SELECT {minute}{KEY_SQL} AS key, {PAIR_SQL} AS a_pair, {ip_text_sql('client_ip')} AS a_client, "
        f"{ip_text_sql('server_ip')} AS a_server, server_port AS a_port, proto AS a_proto, agent_id, {per_agent}, "
        f"{ids} FROM {ident(database)}.{ident(stored)} AS e "
        f"WHERE time >= toDateTime({{t0:Int64}}, 'UTC') AND time < toDateTime({{t1:Int64}}, 'UTC') "
        f"GROUP BY {group_minute}key, a_pair, a_client, a_server, a_port, a_proto, agent_id) "
        f"GROUP BY {group_minute}key"
    )


def read_edges(store: Any, t0: int, t1: int, stored: str = "edge_1m", by_minute: bool = False) -> Edges:
    """The edges of ``[t0, t1)`` (epoch s) from ``stored``."""
    table = store.query_arrow(edges_sql(store.database, stored, by_minute), {"t0": int(t0), "t1": int(t1)})
    cols: dict[str, np.ndarray] = {}
    for name in table.column_names:
        if name == "v":
            continue
        col = table[name]
        if name in ("client_ip", "server_ip"):
            cols[name] = np.asarray(col.to_pylist(), dtype=object)
        else:
            cols[name] = col.to_numpy(zero_copy_only=False)
    for name in ("c2s", "s2c", "packets", "opened", "failed", "retrans"):
        cols[name] = cols[name].astype(np.float64)
    return Edges(cols)

"""The store's side of "why no data for VM X?": when an agent's and a VM's records were last stored,
when the agent's batches were last logged, and how many of the VM's records carry its inventory id.

Every query is bounded to one agent (and the VM's MACs/IPs): the caller may only ask about VMs of its
projects (the route answers 404 otherwise), and nothing of other VMs is returned, only times and counts.
"""

from __future__ import annotations

from typing import Any

#: ``ingest_log`` kinds whose rows land in the tables the diagnosis reads (``flow_log``, ``edge_1s``)
RAW_KINDS = ("flows", "edges_1s")
RAW_TABLES = ("flow_log", "edge_1s")


class StoreLookup:
    """Queries of one flow store; ``lookup(agent, macs, ips)`` is the diagnosis' ``RecordsLookup``.

    Args:
        store: the open ``ClickHouseStore`` (``query_arrow``; ``ctx.table`` names tables).
        database: the flow tables' database when the store has no ``ctx``.
    """

    def __init__(self, store: Any, database: str = "cloudtap") -> None:
        self.store = store
        self.database = database

    def table(self, name: str) -> str:
        ctx = getattr(self.store, "ctx", None)
        return ctx.table(name) if ctx is not None else f"{self.database}.{name}"

    def _last(self, sql: str, params: dict[str, Any]) -> float | None:
        t = self.store.query_arrow(sql, params)
        if t.num_rows and t.column("n")[0].as_py():
            return float(t.column("t")[0].as_py())
        return None

    def __call__(self, agent: str, macs: list[str], ips: list[str]) -> dict[str, Any]:
        """``{"last_any", "last_vm", "last_logged", "error"}``: epoch seconds or None; ``error`` when the store fails."""
        try:
            last_any = None
            for name in RAW_TABLES:
                t = self._last(f"SELECT toUnixTimestamp(max(inserted_at)) AS t, count() AS n FROM {self.table(name)} "
                               "WHERE agent_id = {a:String}", {"a": agent})  # fmt: skip
                last_any = t if last_any is None or (t is not None and t > last_any) else last_any
            logged = self._last(
                f"SELECT toUnixTimestamp(max(inserted_at)) AS t, count() AS n FROM {self.table('ingest_log')} "
                "WHERE agent_id = {a:String} AND arrayExists((k, r) -> has({kinds:Array(String)}, k) AND r > 0, kinds, rows)",
                {"a": agent, "kinds": list(RAW_KINDS)},
            )
            last_vm = None
            if last_any and (macs or ips):
                where, params = self._vm_filter(agent, macs, ips)
                last_vm = self._last(f"SELECT toUnixTimestamp(max(inserted_at)) AS t, count() AS n "
                                     f"FROM {self.table('flow_log')} WHERE {where}", params)  # fmt: skip
            return {"last_any": last_any, "last_vm": last_vm, "last_logged": logged, "error": ""}
        except Exception as exc:  # noqa: BLE001 - a store problem is reported as such in the diagnosis
            return {"last_any": None, "last_vm": None, "error": str(exc).splitlines()[0][:300]}

    def tagging(self, agent: str, macs: list[str], ips: list[str], vm_id: int, since: float) -> tuple[int, int]:
        """``(records, tagged)``: the agent's flow records of the VM (by MAC/IP) stored at or after ``since``
        (epoch s), and how many carry ``vm_id`` on either side."""
        if not (macs or ips):
            return 0, 0
        where, params = self._vm_filter(agent, macs, ips)
        t = self.store.query_arrow(
            f"SELECT count() AS n, countIf(client_vm_id = {{vid:UInt64}} OR server_vm_id = {{vid:UInt64}}) AS tagged "
            f"FROM {self.table('flow_log')} WHERE {where} AND toUnixTimestamp(inserted_at) >= {{since:UInt32}}",
            {**params, "vid": int(vm_id), "since": max(0, int(since))},
        )
        if not t.num_rows:
            return 0, 0
        return int(t.column("n")[0].as_py() or 0), int(t.column("tagged")[0].as_py() or 0)

    @staticmethod
    def _vm_filter(agent: str, macs: list[str], ips: list[str]) -> tuple[str, dict[str, Any]]:
        """``agent_id = a AND (the VM's MACs or IPs on either side)`` and its parameters."""
        conds = []
        params: dict[str, Any] = {"a": agent}
        if macs:
            conds.append("lower(vm_mac) IN {macs:Array(String)}")
            params["macs"] = macs
        if ips:
            conds.append("client_ip IN (SELECT toIPv6(arrayJoin({ips:Array(String)})))")
            conds.append("server_ip IN (SELECT toIPv6(arrayJoin({ips:Array(String)})))")
            params["ips"] = ips
        return f"agent_id = {{a:String}} AND ({' OR '.join(conds)})", params

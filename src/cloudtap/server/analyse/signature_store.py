"""Saved signatures: a small ClickHouse table ``analysis_signature`` in the store's database.

``(name, body JSON, updated_at, deleted)`` in a ``ReplacingMergeTree(updated_at)`` keyed by name, so
saving a name again replaces it and deleting writes a tombstone; reads take the newest row per name.
The table is created on first use (``CREATE TABLE IF NOT EXISTS``); with a cluster it is created
``ON CLUSTER`` as a replicated table on every host (no shards: it is tiny).
"""

from __future__ import annotations

from typing import Any

from cloudtap.server.analyse.errors import AnalysisError
from cloudtap.server.analyse.signature import NAME, Signature
from cloudtap.server.store.ddl import ident

TABLE = "analysis_signature"


class SignatureStore:
    """Save, list, get and delete signatures in ``store``'s database."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.database = getattr(store, "database", "cloudtap")
        self.cluster = getattr(store, "cluster", None)
        self._ready = False

    @property
    def table(self) -> str:
        """Quoted ``db.analysis_signature``."""
        return f"{ident(self.database)}.{ident(TABLE)}"

    def _ensure(self) -> None:
        if self._ready:
            return
        engine = "ReplacingMergeTree(updated_at)"
        on_cluster = ""
        if self.cluster:
            on_cluster = f" ON CLUSTER {ident(self.cluster)}"
            engine = f"ReplicatedReplacingMergeTree('/clickhouse/tables/{self.database}/{TABLE}', '{{replica}}', updated_at)"
        self.store.command(
            f"CREATE TABLE IF NOT EXISTS {self.table}{on_cluster} (name String, body String, "
            f"updated_at DateTime64(6, 'UTC') DEFAULT now64(6), deleted UInt8 DEFAULT 0) "
            f"ENGINE = {engine} ORDER BY name"
        )
        self._ready = True

    def save(self, signature: Signature) -> Signature:
        """Store ``signature`` under its name (replacing one of the same name).

        Raises:
            AnalysisError: the signature has no name.
        """
        if not signature.name:
            raise AnalysisError("a saved signature needs a name", "name")
        self._ensure()
        self.store.command(
            f"INSERT INTO {self.table} (name, body, updated_at, deleted) "
            f"VALUES ({{n:String}}, {{b:String}}, now64(6), 0)",
            {"n": signature.name, "b": signature.model_dump_json()},
        )
        return signature

    def list(self) -> list[Signature]:
        """Every saved signature, by name."""
        self._ensure()
        rows = self.store.query_arrow(
            f"SELECT name, argMax(body, updated_at) AS body, argMax(deleted, updated_at) AS gone "
            f"FROM {self.table} GROUP BY name HAVING gone = 0 ORDER BY name"
        ).to_pylist()
        return [Signature.model_validate_json(r["body"]) for r in rows]

    def get(self, name: str) -> Signature:
        """The signature called ``name``.

        Raises:
            AnalysisError: no such signature (``allowed`` lists the saved names).
        """
        if not NAME.fullmatch(name):
            raise AnalysisError(f"{name!r} is not a signature name", "name")
        self._ensure()
        rows = self.store.query_arrow(
            f"SELECT argMax(body, updated_at) AS body, argMax(deleted, updated_at) AS gone FROM {self.table} "
            f"WHERE name = {{n:String}} GROUP BY name",
            {"n": name},
        ).to_pylist()
        if not rows or rows[0]["gone"]:
            raise AnalysisError(f"no saved signature {name!r}", "name", [s.name or "" for s in self.list()])
        return Signature.model_validate_json(rows[0]["body"])

    def delete(self, name: str) -> None:
        """Forget ``name`` (a tombstone row).

        Raises:
            AnalysisError: no such signature.
        """
        self.get(name)
        self.store.command(
            f"INSERT INTO {self.table} (name, body, updated_at, deleted) VALUES ({{n:String}}, '', now64(6), 1)",
            {"n": name},
        )

"""Where `cloudtap query` gets its answer: a local chDB data directory, read directly, or the server's API."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudtap.cli.errors import CliError
from cloudtap.cli.server_client import UNREACHABLE_HINT, ServerClient
from cloudtap.cli.server_options import Remote
from cloudtap.server.query.errors import QueryError
from cloudtap.server.query.model import Query

if TYPE_CHECKING:  # the engine pulls in the store DDL and the meter: imported when a query runs
    from cloudtap.server.query.engine import QueryResult


def _locked(data: Path) -> bool:
    """True when another process holds the chDB data directory."""
    try:
        fd = os.open(data / "status", os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def open_local_store(data: Path) -> Any:
    """Open the embedded store in ``data`` for reading (no migration).

    Raises:
        CliError: no store there, or a running server holds the directory.
    """
    from cloudtap.server.store.clickhouse import ClickHouseStore

    if not data.is_dir():
        raise CliError(f"no data directory {data}", 2)
    try:
        store = ClickHouseStore(f"chdb://{data.resolve()}")
    except Exception as exc:
        if _locked(data):
            raise CliError(
                f"{data} is in use by another process (a running `cloudtap server`?); chDB lets one process "
                "open a data directory: query that server with --server URL instead"
            ) from exc
        raise CliError(f"cannot open the store in {data}: {str(exc).strip().splitlines()[0]}") from exc
    try:
        version = store.schema_version()
    except Exception:
        version = 0
    if not version:
        store.close()
        raise CliError(f"no cloudtap store in {data} (run `cloudtap import --data {data} FILE` first)", 2)
    return store


def local_names(store: Any, query: Query) -> Any:
    """The inventory kept in ``store`` as a NameResolver when ``query`` uses names (None otherwise, or with no
    inventory stored: name filters are then refused with the reason)."""
    from cloudtap.server.query.names import plan_names

    if not plan_names(query).uses_names:
        return None
    from cloudtap.inventory.names_store import InventoryNames
    from cloudtap.inventory.store import InventoryStore

    try:
        inventory = InventoryStore(store)
    except Exception:  # a store without the inventory tables, and none can be created
        return None
    return InventoryNames(inventory) if inventory.records() else None


def run_local(data: Path, query: Query) -> QueryResult:
    """Answer ``query`` from the embedded store in ``data`` (names from the inventory stored there)."""
    from cloudtap.server.query.engine import QueryEngine

    store = open_local_store(data)
    try:
        return QueryEngine(store, names=local_names(store, query)).run(query)
    finally:
        store.close()


def run_remote(client: ServerClient, query: Query) -> QueryResult:
    """Answer ``query`` through ``POST /api/v1/query`` (Arrow IPC)."""
    from cloudtap.server.query.engine import ARROW_STREAM, QueryResult

    body = json.dumps(query.model_dump(mode="json", exclude_none=True)).encode()
    answer = client.post_raw(
        "/api/v1/query", body, {"Content-Type": "application/json", "Accept": ARROW_STREAM}
    )
    return QueryResult.from_arrow_ipc(answer)


def execute(query: Query, remote: Remote, data: Path | None) -> QueryResult:
    """Run ``query`` on ``data`` (embedded) or the server (``--server``, the last login, or the default)."""
    if remote.server is not None and data is not None:
        raise CliError("give --server URL or --data DIR, not both", 2)
    try:
        if data is not None:
            return run_local(data, query)
        return run_remote(remote.client(hint=f"{UNREACHABLE_HINT} or use --data DIR"), query)
    except QueryError as exc:
        raise CliError(str(exc), 2) from exc

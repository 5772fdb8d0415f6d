"""The connector protocol and the Syncer that runs connectors periodically and on demand.

A connector is anything with a ``name`` and a ``fetch() -> Snapshot``. The :class:`Syncer` applies
each snapshot to the :class:`~cloudtap.inventory.store.InventoryStore` and keeps, per connector, the
last success, the last error and the last change summary: failures are surfaced in ``status()``
(and the API / CLI), never swallowed.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

from cloudtap.errors import CloudtapError
from cloudtap.inventory.history import ChangeSummary
from cloudtap.inventory.model import Snapshot
from cloudtap.inventory.store import InventoryStore

log = logging.getLogger(__name__)

#: Connector modules configured by a settings sub-section of the same name, and the class each exposes
#: (a module may instead define ``from_settings(config) -> Connector``).
PLATFORM_CONNECTORS = {
    "openstack": ("cloudtap.inventory.connectors.openstack", "OpenStackConnector"),
    "vsphere": ("cloudtap.inventory.connectors.vsphere", "VSphereConnector"),
    "kubernetes": ("cloudtap.inventory.connectors.kubernetes", "KubernetesConnector"),
}


class ConnectorError(CloudtapError):
    """A connector could not read its platform (message names the connector, the call and why)."""


@runtime_checkable
class Connector(Protocol):
    """Reads one platform into a :class:`Snapshot`."""

    name: str

    def fetch(self) -> Snapshot:
        """Everything the platform shows now (``source`` = the connector's name)."""
        ...


@dataclass
class ConnectorStatus:
    """Health of one connector, as the Syncer saw it."""

    name: str
    syncs: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    last_attempt_ns: int | None = None
    last_success_ns: int | None = None
    last_error: str | None = None
    last_error_ns: int | None = None
    last_duration_s: float | None = None
    last_summary: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        """True when the last attempt succeeded (or none was made yet)."""
        return self.consecutive_failures == 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form with ``ok``."""
        return {**asdict(self), "ok": self.ok}


@dataclass
class SyncResult:
    """Outcome of one connector's sync."""

    name: str
    summary: ChangeSummary | None = None
    error: str | None = None


@dataclass
class Syncer:
    """Runs connectors into an inventory: ``sync()`` on demand, ``start()`` for a periodic thread.

    Args:
        inventory: where snapshots are applied.
        connectors: the connectors (names must be unique).
        period_s: seconds between periodic syncs.
        clock: ns clock (tests).
    """

    inventory: InventoryStore
    connectors: list[Connector] = field(default_factory=list)
    period_s: float = 60.0
    clock: Callable[[], int] = time.time_ns
    _status: dict[str, ConnectorStatus] = field(default_factory=dict, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _wake: threading.Event = field(default_factory=threading.Event, init=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        names = [c.name for c in self.connectors]
        if len(set(names)) != len(names):
            raise ValueError(f"connector names must be unique, got {names}")
        for name in names:
            self._status[name] = ConnectorStatus(name)

    def add(self, connector: Connector) -> None:
        """Add a connector (its name must be new)."""
        with self._lock:
            if connector.name in self._status:
                raise ValueError(f"a connector named {connector.name!r} is already registered")
            self.connectors.append(connector)
            self._status[connector.name] = ConnectorStatus(connector.name)

    def connector(self, name: str) -> Connector:
        """The connector called ``name`` (KeyError listing the known ones)."""
        for c in self.connectors:
            if c.name == name:
                return c
        raise KeyError(f"no connector {name!r}; configured: {', '.join(c.name for c in self.connectors) or 'none'}")

    def sync(self, name: str | None = None) -> list[SyncResult]:
        """Fetch and apply now: every connector, or the one called ``name``.

        A failing connector does not stop the others; its error is in the result and in ``status()``.

        Raises:
            KeyError: ``name`` is not a configured connector.
        """
        targets = [self.connector(name)] if name is not None else list(self.connectors)
        with self._lock:  # one sync at a time (the periodic thread and on-demand callers)
            return [self._sync_one(c) for c in targets]

    def _sync_one(self, connector: Connector) -> SyncResult:
        status = self._status.setdefault(connector.name, ConnectorStatus(connector.name))
        started = time.perf_counter()
        status.last_attempt_ns = self.clock()
        status.syncs += 1
        try:
            snapshot = connector.fetch()
            if snapshot.source != connector.name:
                raise ConnectorError(
                    f"connector {connector.name!r} returned a snapshot of source {snapshot.source!r}"
                )
            if not snapshot.taken_at:
                snapshot.taken_at = status.last_attempt_ns
            summary = self.inventory.apply(snapshot)
        except Exception as exc:  # every failure is recorded and reported, none is fatal to the others
            status.failures += 1
            status.consecutive_failures += 1
            status.last_error = f"{type(exc).__name__}: {exc}"
            status.last_error_ns = self.clock()
            status.last_duration_s = time.perf_counter() - started
            log.warning("inventory connector %s failed: %s", connector.name, status.last_error)
            return SyncResult(connector.name, error=status.last_error)
        status.consecutive_failures = 0
        status.last_success_ns = self.clock()
        status.last_duration_s = time.perf_counter() - started
        status.last_summary = summary.as_dict()
        return SyncResult(connector.name, summary=summary)

    def status(self) -> list[ConnectorStatus]:
        """Per connector: syncs, failures, last success and last error."""
        return [self._status[c.name] for c in self.connectors if c.name in self._status]

    # -- periodic ---------------------------------------------------------------------------------
    def request_sync(self) -> None:
        """Wake the periodic thread for an immediate sync (returns at once)."""
        self._wake.set()

    def start(self) -> None:
        """Start the periodic thread (syncs at once, then every ``period_s``)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="inventory-sync", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the periodic thread (waits for a sync in progress, up to ``timeout_s``)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sync()
            self._wake.wait(self.period_s)
            self._wake.clear()


def build_connectors(section: Any) -> list[Connector]:
    """Connectors configured in the server's ``inventory`` settings section.

    ``static_file`` -> the static connector; each platform sub-section (``openstack``, ``vsphere``,
    ``kubernetes``; a config or a list of configs) -> its connector, built by the module's
    ``from_settings(config)`` or its connector class. Agent learning is wired by the controller.

    Raises:
        ConnectorError: a configured connector's module is missing.
    """
    out: list[Connector] = []
    if getattr(section, "static_file", None):
        from cloudtap.inventory.connectors.static import StaticConnector

        out.append(StaticConnector(section.static_file))
    for name, (module_name, class_name) in PLATFORM_CONNECTORS.items():
        configs = getattr(section, name, None)
        if not configs:
            continue
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConnectorError(f"inventory.{name} is configured but {module_name} cannot be loaded: {exc}") from exc
        factory = getattr(module, "from_settings", None) or getattr(module, class_name)
        for cfg in configs if isinstance(configs, Sequence) and not isinstance(configs, str) else [configs]:
            out.append(factory(cfg))
    return out

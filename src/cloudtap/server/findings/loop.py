"""FindingsLoop: the engine every ``findings.interval_s`` in a daemon thread, for as long as the app serves.

Built by :func:`install` from the app's state (store, settings, the inventory's names, the webhook);
a failing cycle is logged and counted, never raised; the next one runs on schedule.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from cloudtap.server.findings.engine import FindingsEngine
from cloudtap.server.findings.webhook import Webhook

log = logging.getLogger(__name__)


class FindingsLoop:
    """Runs ``engine.run_due()`` every ``period_s`` (first after ``initial_delay_s``)."""

    def __init__(self, engine: FindingsEngine, period_s: float, initial_delay_s: float = 5.0) -> None:
        self.engine = engine
        self.period_s = period_s
        self.initial_delay_s = initial_delay_s
        self.failures = 0
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> dict[str, Any] | None:
        """One scheduled pass (errors counted, not raised)."""
        try:
            return self.engine.run_due()
        except Exception as exc:  # the loop must survive a store hiccup
            self.failures += 1
            self.last_error = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            log.exception("findings: cycle failed")
            return None

    def _run(self) -> None:
        if self._stop.wait(self.initial_delay_s):
            return
        while not self._stop.is_set():
            self.run_once()
            if self._stop.wait(self.period_s):
                return

    def start(self) -> None:
        """Start the thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="findings", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop and wait for a running cycle to end."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)


def engine_of(app: Any, names: Callable[[], Any] | None = None) -> FindingsEngine | None:
    """The app's findings engine, built on first use (None without a store that runs SQL).

    ``names`` returns the inventory's NameResolver at each cycle (default ``app.state.names``)."""
    state = app.state
    engine: FindingsEngine | None = getattr(state, "findings_engine", None)
    if engine is not None:
        return engine
    store = getattr(state, "store", None)
    if store is None or not hasattr(store, "command") or not hasattr(store, "query_arrow"):
        return None
    config = state.settings.findings
    webhook = None
    if config.webhook_url:
        webhook = Webhook(config.webhook_url, config.webhook_min_severity, config.webhook_timeout_s,
                          config.external_url, retries=config.webhook_retries)  # fmt: skip
    state.findings_webhook = webhook
    names = names or (lambda: getattr(state, "names", None))
    engine = FindingsEngine(store, config, names=names, notify=webhook)
    state.findings_engine = engine
    return engine


def start_loop(app: Any, names: Callable[[], Any] | None = None) -> FindingsLoop | None:
    """Create the engine's tables and start the loop when ``findings.enabled`` (None otherwise)."""
    config = app.state.settings.findings
    engine = engine_of(app, names)
    if engine is None:
        return None
    try:
        engine.findings.ensure()
    except Exception:
        log.exception("findings: cannot create the findings tables; the engine stays off")
        return None
    if not config.enabled:
        return None
    loop = FindingsLoop(engine, config.interval_s, initial_delay_s=config.interval_s)
    app.state.findings_loop = loop
    loop.start()
    return loop

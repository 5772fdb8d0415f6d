"""PgListener: a thread that ``LISTEN``s on one PostgreSQL channel and calls the subscribers of each topic.

A notification's payload reads ``topic`` or ``topic:detail``; the subscribers of ``topic`` get ``detail``
(the notifications of a burst are gathered, 20 ms, and each distinct one dispatched once).
After every (re)connection each subscriber gets ``""`` (anything may have changed while nobody listened), so a
lost connection costs a reload, never a missed change.
"""

from __future__ import annotations

import logging
import threading

import psycopg

from cloudtap.server.controller.db import Listener

log = logging.getLogger(__name__)


class PgListener:
    """Follows ``channel`` on its own autocommit connection; reconnects with a growing pause (≤ 10 s).

    Args:
        url: the database URL (never logged).
        channel: the ``LISTEN`` channel.
        shown: the URL without its password, for logs.
    """

    def __init__(self, url: str, channel: str, shown: str) -> None:
        self.url, self.channel, self.shown = url, channel, shown
        self._subscribers: dict[str, list[Listener]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="controller-listen", daemon=True)
        self.connected = threading.Event()  #: set while LISTEN is active (tests wait for it)

    def subscribe(self, topic: str, listener: Listener) -> None:
        with self._lock:
            self._subscribers.setdefault(topic, []).append(listener)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _dispatch(self, topic: str, detail: str) -> None:
        with self._lock:
            listeners = list(self._subscribers.get(topic, ()))
        for listener in listeners:
            try:
                listener(detail)
            except Exception:  # noqa: BLE001 - one bad subscriber must not stop the others; logged
                log.exception("controller: reacting to a %s change failed", topic)

    def _everything(self) -> None:
        with self._lock:
            topics = list(self._subscribers)
        for topic in topics:
            self._dispatch(topic, "")

    def _run(self) -> None:
        pause = 0.5
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as conn:
                    conn.execute(f"LISTEN {self.channel}")
                    self.connected.set()
                    pause = 0.5
                    self._everything()
                    while not self._stop.is_set():
                        notes = list(conn.notifies(timeout=0.5, stop_after=1))
                        if notes:  # a burst (500 agents registering) is one reload per topic, not 500
                            notes += conn.notifies(timeout=0.02)
                        for payload in dict.fromkeys(n.payload for n in notes):
                            topic, _, detail = payload.partition(":")
                            self._dispatch(topic, detail)
            except psycopg.Error as exc:
                self.connected.clear()
                log.warning("controller: lost the notifications of %s (%s); again in %.1f s", self.shown,
                            type(exc).__name__, pause)  # fmt: skip
                self._stop.wait(pause)
                pause = min(pause * 2, 10.0)
        self.connected.clear()

"""The Alertmanager webhook: the payload's shape, severity filter, and that it goes to the configured URL only."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from findingsdata import Dataset
from findingsrun import Ran, run_engine

from cloudtap.errors import ConfigError
from cloudtap.server.findings.webhook import Webhook, check_url

#: Alertmanager's webhook body (version 4) and each alert's fields.
BODY_KEYS = {"version", "groupKey", "truncatedAlerts", "status", "receiver", "groupLabels", "commonLabels",
             "commonAnnotations", "externalURL", "alerts"}  # fmt: skip
ALERT_KEYS = {"status", "labels", "annotations", "startsAt", "endsAt", "generatorURL", "fingerprint"}


class Receiver:
    """A small HTTP receiver recording every request (path, body)."""

    def __init__(self) -> None:
        received: list[tuple[str, str, Any]] = []
        self.received = received
        statuses: list[int] = []
        self.statuses = statuses  #: answers to the next POSTs, in order (then 200)

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                received.append(("POST", self.path, json.loads(body)))
                self.send_response(statuses.pop(0) if statuses else 200)
                self.end_headers()

            def do_GET(self) -> None:  # noqa: N802
                received.append(("GET", self.path, None))
                self.send_response(404)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.close()


def test_the_payload_is_alertmanagers(planted: Ran, receiver: Receiver) -> None:
    rows = planted.store.query_arrow(
        f"SELECT * FROM {planted.store.database}.finding FINAL ORDER BY id"
    ).to_pylist()
    rows = [
        {
            **r,
            "time_from": int(r["time_from"].timestamp())
            if hasattr(r["time_from"], "timestamp")
            else int(r["time_from"]),
        }
        for r in rows
    ]
    hook = Webhook(receiver.url + "/hooks/am", "warning", external_url="https://cloudtap.example")
    hook(rows)
    assert hook.sent == 1 and hook.failed == 0
    ((method, path, body),) = receiver.received
    assert (method, path) == ("POST", "/hooks/am")
    assert set(body) == BODY_KEYS and body["version"] == "4" and body["status"] == "firing"
    assert body["truncatedAlerts"] == 0 and body["receiver"] == "cloudtap-findings"
    loud = [r for r in rows if r["severity"] != "info"]
    assert len(body["alerts"]) == len(loud) == hook.alerts > 0
    for alert in body["alerts"]:
        assert set(alert) == ALERT_KEYS and alert["status"] == "firing"
        labels = alert["labels"]
        assert labels["alertname"] == f"cloudtap_{labels['kind']}" and labels["severity"] in (
            "warning",
            "critical",
        )
        assert alert["fingerprint"] == labels["finding_id"]
        assert alert["generatorURL"] == f"https://cloudtap.example/api/v1/findings/{labels['finding_id']}"
        assert alert["annotations"]["summary"] and alert["annotations"]["reproduce"].startswith("cloudtap ")
        assert alert["startsAt"].endswith("Z") and alert["endsAt"] == "0001-01-01T00:00:00Z"


def test_the_engine_delivers_new_findings_to_the_configured_url_only(
    chdb_dsn: str, planted_data: Dataset, receiver: Receiver
) -> None:
    hook = Webhook(receiver.url + "/only/here", "warning")
    ran = run_engine(chdb_dsn, planted_data, "findings_webhook", 30, notify=hook)
    try:
        assert receiver.received and {(m, p) for m, p, _ in receiver.received} == {("POST", "/only/here")}
        alerts = [a for _, _, body in receiver.received for a in body["alerts"]]
        kinds = {a["labels"]["kind"] for a in alerts}
        assert {"burst", "scan", "lb_imbalance", "isolation_crossing", "handshake_failures",
                "retransmission_spike"} <= kinds  # fmt: skip
        assert not kinds & {"new_edge", "new_port", "periodic_transfer"}  # info: below the least severity
        stored = {f.id for f in ran.engine.findings.find(limit=1000) if f.severity != "info"}
        assert {a["fingerprint"] for a in alerts} == stored  # each once, when new
    finally:
        ran.store.close()


ROW = {"id": "x", "kind": "scan", "severity": "critical", "subject": "{}", "summary": "s", "reproduce": "",
       "figures": "{}", "baseline": "{}", "time_from": 0}  # fmt: skip


def test_a_receiver_that_stays_down_is_tried_again_then_counted_not_raised(receiver: Receiver) -> None:
    waits: list[float] = []
    hook = Webhook(
        receiver.url.replace(receiver.url.rsplit(":", 1)[1], "9"), "info", timeout_s=2, sleep=waits.append
    )
    hook([ROW])
    assert (hook.sent, hook.failed, hook.retries) == (0, 1, 2)
    assert waits == [1.0, 2.0]  # backing off


def test_a_busy_receiver_gets_the_alert_on_a_later_attempt(receiver: Receiver) -> None:
    receiver.statuses[:] = [503, 429]
    waits: list[float] = []
    hook = Webhook(receiver.url + "/am", "info", sleep=waits.append)
    hook([ROW])
    assert (hook.sent, hook.failed, hook.retries, hook.alerts) == (1, 0, 2, 1)
    assert len(receiver.received) == 3 and waits == [1.0, 2.0]
    assert receiver.received[0][2] == receiver.received[2][2]  # the same body each time


def test_a_refusal_is_not_retried(receiver: Receiver) -> None:
    receiver.statuses[:] = [400]
    hook = Webhook(receiver.url + "/am", "info", retries=5, sleep=lambda s: pytest.fail("no retry of a 4xx"))
    hook([ROW])
    assert (hook.sent, hook.failed, hook.retries) == (0, 1, 0) and len(receiver.received) == 1


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://h/x", "127.0.0.1:9093", "http://"])
def test_only_http_urls_are_accepted(url: str) -> None:
    with pytest.raises(ConfigError):
        check_url(url)

"""Delivery of new findings as Alertmanager's webhook payload (version 4), so existing alert routing works.

The body is what Alertmanager POSTs to a ``webhook_config`` receiver: ``version``, ``groupKey``,
``truncatedAlerts``, ``status``, ``receiver``, ``groupLabels``, ``commonLabels``, ``commonAnnotations``,
``externalURL`` and ``alerts`` (each ``status``, ``labels``, ``annotations``, ``startsAt``, ``endsAt``,
``generatorURL``, ``fingerprint``). Labels: ``alertname`` (``cloudtap_<kind>``), ``kind``, ``severity``,
``finding_id``, projects and the edge; annotations: summary, reproduce command, figures and baseline.
It is only ever sent to ``findings.webhook_url`` (http or https, checked at start). A receiver that is
down, times out, answers 5xx or 429 is tried again ``findings.webhook_retries`` times within the cycle,
after 1 s, 2 s, 4 s...; then the delivery is counted as failed and logged. Nothing is queued across
cycles (a queue could grow without bound while a receiver is away); the findings stay in the store.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

import httpx

from cloudtap.errors import ConfigError
from cloudtap.server.findings.model import severity_rank
from cloudtap.server.findings.store import iso_s

log = logging.getLogger(__name__)
RECEIVER = "cloudtap-findings"
#: Alertmanager's "no end" time.
ZERO_TIME = "0001-01-01T00:00:00Z"


def check_url(url: str) -> str:
    """``url`` when it is an absolute http(s) URL, else ConfigError."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ConfigError(f"findings.webhook_url must be an http(s) URL, got {url!r}")
    return url


def _alert(row: dict[str, Any], external_url: str) -> dict[str, Any]:
    subject = json.loads(row["subject"])
    labels = {
        "alertname": f"cloudtap_{row['kind']}", "kind": row["kind"], "severity": row["severity"],
        "finding_id": row["id"], "client_ip": subject.get("client_ip", ""), "server_ip": subject.get("server_ip", ""),
        "server_port": "" if subject.get("server_port") is None else str(subject["server_port"]),
        "client_project": subject.get("client_project", ""), "server_project": subject.get("server_project", ""),
    }  # fmt: skip
    base = external_url.rstrip("/")
    return {
        "status": "firing",
        "labels": {k: v for k, v in labels.items() if v != ""},
        "annotations": {
            "summary": row["summary"],
            "subject": subject.get("label", ""),
            "reproduce": row["reproduce"],
            "figures": row["figures"],
            "baseline": row["baseline"],
        },  # fmt: skip
        "startsAt": iso_s(row["time_from"]),
        "endsAt": ZERO_TIME,
        "generatorURL": f"{base}/api/v1/findings/{row['id']}" if base else "",
        "fingerprint": row["id"],
    }


def payload(rows: list[dict[str, Any]], external_url: str = "") -> dict[str, Any]:
    """Alertmanager's webhook body (version 4) for finding rows."""
    alerts = [_alert(r, external_url) for r in rows]
    common = dict(alerts[0]["labels"]) if alerts else {}
    for a in alerts[1:]:
        common = {k: v for k, v in common.items() if a["labels"].get(k) == v}
    return {
        "version": "4",
        "groupKey": '{}:{alertname="cloudtap_findings"}',
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": RECEIVER,
        "groupLabels": {},
        "commonLabels": common,
        "commonAnnotations": {},
        "externalURL": external_url,
        "alerts": alerts,
    }


class Webhook:
    """POSTs new findings of at least ``min_severity`` to one configured URL.

    Counters (for ``/metrics``): ``sent`` (requests answered 2xx), ``failed`` (deliveries given up),
    ``retries`` (attempts after a retryable failure), ``alerts`` (alerts sent).
    """

    def __init__(
        self, url: str, min_severity: str = "warning", timeout_s: float = 5.0, external_url: str = "",
        retries: int = 2, backoff_s: float = 1.0, sleep: Callable[[float], None] = time.sleep,
    ) -> None:  # fmt: skip
        self.url = check_url(url)
        self.min_rank = severity_rank(min_severity)
        self.timeout_s = timeout_s
        self.external_url = external_url
        self.max_retries = retries
        self.backoff_s = backoff_s
        self._sleep = sleep
        self.sent = 0
        self.failed = 0
        self.retries = 0
        self.alerts = 0

    def __call__(self, rows: list[dict[str, Any]]) -> None:
        """Deliver ``rows`` (those below the least severity are left out)."""
        chosen = [r for r in rows if severity_rank(r["severity"]) >= self.min_rank]
        if not chosen:
            return
        body = payload(chosen, self.external_url)
        for attempt in range(self.max_retries + 1):
            if attempt:
                self.retries += 1
                self._sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                answer = httpx.post(self.url, json=body, timeout=self.timeout_s, follow_redirects=False)
                answer.raise_for_status()
            except httpx.HTTPStatusError as exc:
                retryable = exc.response.status_code >= 500 or exc.response.status_code == 429
                error: Exception = exc
            except httpx.HTTPError as exc:  # refused, reset, timed out
                retryable, error = True, exc
            else:
                self.sent += 1
                self.alerts += len(chosen)
                return
            if not retryable:
                break
        self.failed += 1
        log.warning("findings webhook %s failed after %d attempt(s): %s", self.url, attempt + 1, error)

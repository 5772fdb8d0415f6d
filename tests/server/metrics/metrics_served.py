"""The served app of the metrics tests (see conftest.py) and how to scrape it."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Any

import httpx

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclass
class Served:
    """The running server and what it was sent."""

    app: Any
    url: str
    admin: dict[str, str]
    viewer: dict[str, str]  #: viewer on every project: holds metrics:read
    project_viewer: dict[str, str]  #: viewer of one project: metrics:read does not hold
    rows: dict[str, int] = field(default_factory=dict)
    nbytes: dict[str, int] = field(default_factory=dict)
    wire_bytes: int = 0
    batches: int = 0


def free_port() -> int:
    """A TCP port free on loopback now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(served: Served, headers: dict[str, str] | None = None) -> Samples:
    """``GET /metrics`` parsed: (sample name, labels) -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    r = httpx.get(served.url + "/metrics", headers=served.viewer if headers is None else headers, timeout=60)
    assert r.status_code == 200, r.text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample ``name{labels}`` (KeyError naming the close ones when it is missing)."""
    key = (name, frozenset(labels.items()))
    if key not in samples:
        near = sorted(str(dict(k[1])) for k in samples if k[0] == name)
        raise KeyError(f"{name}{labels} not scraped; {name} has {near}")
    return samples[key]


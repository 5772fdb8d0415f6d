"""The demo's closing panel: a console link that reproduces the scenario's whole range."""

from __future__ import annotations

from types import SimpleNamespace

from cloudtap.demo.__main__ import console_link
from cloudtap.synth.scenario import builtin_scenario


def test_the_console_link_opens_the_panorama_over_the_whole_scenario() -> None:
    stack = SimpleNamespace(url="https://127.0.0.1:8470", scenario=builtin_scenario("seed-case"))
    assert console_link(stack) == (  # type: ignore[arg-type]
        "https://127.0.0.1:8470/#/panorama?from=2026-11-20T00:00:00Z&to=2026-11-20T03:00:00Z"
    )

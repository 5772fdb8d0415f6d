"""Topology on the metered synthetic cloud: levels, names, filters, limits, errors."""

from __future__ import annotations

from typing import Any

import pytest
from analysedata import AnalyseData, DictNames

from cloudtap.server.analyse import AnalysisError, TopologyRequest, topology

DAY = {"time_from": "2026-11-20T00:00:00Z", "time_to": "2026-11-20T03:00:00Z"}


def test_vm_level_names_the_backup_edge_first(astore: Any, names: DictNames, adata: AnalyseData) -> None:
    t = topology(astore, TopologyRequest(**DAY, level="vm", limit=5), names)
    assert t.stored_table == "edge_1h" and t.edges_total > 5 and t.truncated
    top = t.edges[0]
    assert (top.source_name, top.target_name, top.ports) == ("db-01", "backup-01", [873])
    assert top.source == f"vm:{adata.inventory['vm']['db-01']}"
    assert top.bytes == top.bytes_c2s + top.bytes_s2c and top.bytes_c2s > 20 * top.bytes_s2c
    assert top.flows == 3 and top.rtt_count == 3 and top.rtt_mean_us and top.rtt_mean_us > 0
    assert [e.bytes for e in t.edges] == sorted((e.bytes for e in t.edges), reverse=True)
    node = next(n for n in t.nodes if n.name == "db-01")
    assert node.bytes_as_client >= top.bytes


def test_ip_level_totals_match_the_stored_edges(astore: Any, names: DictNames, adata: AnalyseData) -> None:
    db = adata.ip_of("db-01")
    t = topology(astore, TopologyRequest(**DAY, level="ip", filter={"ip": db}, limit=5000), names)
    e = adata.tables["edges_60s"]
    want = sum(
        b1 + b2
        for c, s, b1, b2 in zip(e["client_ip"].to_pylist(), e["server_ip"].to_pylist(), e["bytes_c2s"].to_pylist(),
                                e["bytes_s2c"].to_pylist(), strict=True)  # fmt: skip
        if db in (c, s)
    )
    assert sum(x.bytes for x in t.edges) == want and not t.truncated
    assert all(db in (x.source, x.target) for x in t.edges)
    assert {x.source_name for x in t.edges if x.source == db} == {"db-01"}


def test_project_level_and_port_filter(astore: Any, names: DictNames) -> None:
    t = topology(astore, TopologyRequest(**DAY, level="project", filter={"port": 5432}), names)
    assert [(e.source_name, e.target_name) for e in t.edges] == [("shop", "shop")]
    assert t.edges[0].ports == [5432] and t.edges[0].flows > 100


def test_without_names_ids_are_shown(astore: Any) -> None:
    t = topology(astore, TopologyRequest(**DAY, level="host", filter={"vm": "id:1"}, by_port=True, limit=3))
    assert all(e.source_name.startswith("id:") and e.server_port is not None for e in t.edges)


@pytest.mark.parametrize(("change", "field"), [({"level": "rack"}, "level"), ({"time_from": "yesterday-ish"}, "time_from"),
                                               ({"filter": {"vm": "nope-01"}}, "vm"), ({"filter": {"ip": "10.0.0.300"}}, "ip")])  # fmt: skip
def test_bad_input_names_the_field(astore: Any, names: DictNames, change: dict[str, Any], field: str) -> None:
    with pytest.raises(AnalysisError) as err:
        topology(astore, TopologyRequest(**{**DAY, **change}), names)
    assert err.value.field == field


@pytest.mark.parametrize("since", ["now-15m", "-1h", "now-7d", "now-60d"])
def test_relative_ranges_answer_even_when_empty(astore: Any, names: DictNames, since: str) -> None:
    """The console's relative ranges answer (empty where nothing is stored), never "no rollup serves"."""
    t = topology(astore, TopologyRequest(time_from=since, time_to="now", level="project"), names)
    if since in ("now-15m", "-1h"):  # the stored day is past
        assert t.nodes == [] and t.edges == []


def test_edge_ports_name_services_not_icmp_identifiers(astore: Any, names: DictNames, adata: AnalyseData) -> None:
    edges = adata.tables["edges_60s"].to_pylist()
    services = {int(r["server_port"]) for r in edges if int(r["proto"]) not in (1, 58)}
    icmp_ids = {int(r["server_port"]) for r in edges if int(r["proto"]) in (1, 58)} - services
    assert icmp_ids  # the data has pings whose "ports" are echo identifiers
    t = topology(astore, TopologyRequest(**DAY, level="ip", limit=1000), names)
    listed = {p for e in t.edges for p in e.ports}
    assert listed and listed <= services and not listed & icmp_ids

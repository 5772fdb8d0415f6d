"""Kubernetes connector: the real kubernetes client against a stub kube-apiserver (tests/inventory/stubs)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

pytest.importorskip("kubernetes")

from stubs.kubernetes_api import TOKEN  # noqa: E402

from cloudtap.inventory.connectors.base import Connector, ConnectorError  # noqa: E402
from cloudtap.inventory.connectors.kubernetes import KubernetesConfig, KubernetesConnector, from_settings  # noqa: E402


def _connector(url: str, token: str = TOKEN, **over) -> KubernetesConnector:
    return KubernetesConnector(KubernetesConfig(host=url, token=token, **over))


def _check(snap) -> None:
    assert snap.source == "kubernetes"
    ns = {n.name: n.key for n in snap.namespaces}
    assert sorted(ns) == ["default", "kube-system", "payments"]
    nodes = {n.name: n for n in snap.nodes}
    assert {n: x.address for n, x in nodes.items()} == {"node-a": "192.0.2.21", "node-b": "192.0.2.22"}
    assert {(h.key, h.name, h.zone, h.region, h.address) for h in snap.hosts} == {
        (nodes["node-a"].key, "node-a", "zone-a", "region-1", "192.0.2.21"),
        (nodes["node-b"].key, "node-b", "zone-b", "region-1", "192.0.2.22"),
    }
    assert [r.key for r in snap.regions] == ["region-1"]
    assert sorted(z.key for z in snap.zones) == ["zone-a", "zone-b"]
    pods = {p.name: p for p in snap.pods}
    assert len(pods) == 4
    db = pods["db-0"]
    assert (db.namespace, db.node, db.ip) == (ns["payments"], nodes["node-a"].key, "10.244.0.10")
    assert db.labels == (("app", "db"), ("tier", "data"))
    assert pods["kube-proxy-x2x9"].ip == "192.0.2.21"  # host network
    svcs = {s.name: s for s in snap.services}
    assert (svcs["api"].cluster_ips, svcs["api"].ports, svcs["api"].selector) == (
        ("10.96.10.6",),
        (80, 9090),
        (("app", "api"),),
    )
    assert svcs["kubernetes"].namespace == ns["default"] and svcs["kubernetes"].selector == ()


def test_snapshot_content_with_paging(kubernetes_stub) -> None:
    conn = _connector(kubernetes_stub.base_url, page_size=3)
    assert isinstance(conn, Connector) and conn.name == "kubernetes"
    _check(conn.fetch())
    pod_pages = [p for m, p in kubernetes_stub.requests if p == "/api/v1/pods"]
    assert len(pod_pages) == 2  # 4 pods, limit 3: one continue


def test_kubeconfig(kubernetes_stub, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(f"""apiVersion: v1
kind: Config
clusters:
- name: stub
  cluster: {{server: "{kubernetes_stub.base_url}"}}
users:
- name: reader
  user: {{token: "{TOKEN}"}}
contexts:
- name: stub-reader
  context: {{cluster: stub, user: reader}}
current-context: stub-reader
""")
    _check(from_settings({"kubeconfig": str(kubeconfig)}).fetch())


def test_bad_token_is_a_clear_error(kubernetes_stub) -> None:
    with pytest.raises(ConnectorError) as err:
        _connector(kubernetes_stub.base_url, token="wrong").fetch()
    msg = str(err.value)
    assert msg.startswith(f"kubernetes connector ({kubernetes_stub.base_url}): listing namespaces failed")
    assert "authentication refused" in msg and "401" in msg


def test_server_down_is_a_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(
        ConnectorError, match=r"^kubernetes connector \(.*\): listing namespaces failed: cannot reach"
    ):
        _connector(f"http://127.0.0.1:{port}").fetch()


def test_config_needs_a_token_with_host() -> None:
    with pytest.raises(ValueError, match="needs a 'token'"):
        KubernetesConfig(host="https://10.0.0.1:6443")

"""Kubernetes connector: namespaces, nodes, pods and services through the kubernetes Python client.

Mapping onto :mod:`cloudtap.inventory.model` (keys are Kubernetes uids; references use keys):

- namespace: each namespace;
- node: each node, address its ``InternalIP``; each node is also a host (same key) so VM-style queries
  and agents on nodes work; zone/region from the ``topology.kubernetes.io/zone|region`` labels
  (region falls back to the configured ``region``);
- pod: each pod (namespace, node, ``podIP``, labels); host-network pods keep the node's IP as ``ip``;
- service: each service (``clusterIPs``, ports, selector).

Lists are read in pages (``limit``/``continue``) so a large cluster is not fetched in one response.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from cloudtap.inventory.connectors.base import ConnectorError
from cloudtap.inventory.model import Host, Namespace, Node, Pod, Region, Service, Snapshot, Zone

NAME = "kubernetes"
ZONE_LABEL = "topology.kubernetes.io/zone"
REGION_LABEL = "topology.kubernetes.io/region"


class KubernetesConfig(BaseModel):
    """How to reach one cluster: a kubeconfig file (and context), or an API URL and a bearer token."""

    model_config = ConfigDict(extra="forbid")

    kubeconfig: str | None = Field(None, description="kubeconfig file; used when ``host`` is not set")
    context: str | None = Field(None, description="kubeconfig context (default: its current-context)")
    host: str | None = Field(None, description="API server URL, e.g. https://10.0.0.1:6443 (with ``token``)")
    token: SecretStr | None = Field(None, description="bearer token (service account) for ``host``")
    verify_tls: bool = Field(True, description="verify the API server's certificate (``host`` mode)")
    ca_cert: str | None = Field(None, description="CA bundle for ``host`` mode (default: system store)")
    region: str = Field("", description="region of nodes without a topology.kubernetes.io/region label")
    page_size: int = Field(500, ge=1, description="items per list request (limit/continue paging)")
    timeout_s: float = Field(30.0, gt=0, description="timeout of each API call, seconds")

    @model_validator(mode="after")
    def _one_way_in(self) -> KubernetesConfig:
        if self.host and self.token is None:
            raise ValueError("kubernetes: 'host' needs a 'token'")
        return self


class KubernetesConnector:
    """Reads one cluster into a :class:`Snapshot` (``fetch``); see the module doc for the mapping."""

    name = NAME

    def __init__(self, config: KubernetesConfig) -> None:
        self.config = config

    @property
    def _where(self) -> str:
        return self.config.host or self.config.kubeconfig or "default kubeconfig"

    def _api_client(self) -> Any:
        from kubernetes import client, config

        cfg = self.config
        if cfg.host:
            conf = client.Configuration()
            conf.host = cfg.host.rstrip("/")
            conf.api_key = {"authorization": cfg.token.get_secret_value()} if cfg.token else {}
            conf.api_key_prefix = {"authorization": "Bearer"}
            conf.verify_ssl = cfg.verify_tls
            conf.ssl_ca_cert = cfg.ca_cert
            conf.retries = 1
            return client.ApiClient(conf)
        try:
            return config.new_client_from_config(config_file=cfg.kubeconfig, context=cfg.context)
        except Exception as exc:  # noqa: BLE001 - config errors become one connector error
            raise ConnectorError(f"{NAME} connector ({self._where}): cannot load kubeconfig: {exc}") from exc

    def fetch(self) -> Snapshot:
        """Read everything now.

        Returns:
            The cluster's Snapshot.

        Raises:
            ConnectorError: naming this connector, the list that failed and why (401 bad token, 403
                RBAC, unreachable API server).
        """
        from kubernetes import client

        taken = time.time_ns()
        api_client = self._api_client()
        try:
            core = client.CoreV1Api(api_client)
            namespaces = self._list("namespaces", core.list_namespace)
            nodes = self._list("nodes", core.list_node)
            pods = self._list("pods", core.list_pod_for_all_namespaces)
            services = self._list("services", core.list_service_for_all_namespaces)
        finally:
            api_client.close()
        return self._snapshot(taken, namespaces, nodes, pods, services)

    def _list(self, what: str, fn: Any) -> list[Any]:
        items: list[Any] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {
                "limit": self.config.page_size,
                "_request_timeout": self.config.timeout_s,
            }
            if token:
                kwargs["_continue"] = token
            try:
                page = fn(**kwargs)
            except Exception as exc:  # noqa: BLE001 - translated into one error type with the cause
                raise ConnectorError(
                    f"{NAME} connector ({self._where}): listing {what} failed: {_cause(exc)}"
                ) from exc
            items.extend(page.items or [])
            token = page.metadata._continue if page.metadata else None
            if not token:
                return items

    def _snapshot(
        self, taken: int, namespaces: list[Any], nodes: list[Any], pods: list[Any], services: list[Any]
    ) -> Snapshot:
        snap = Snapshot(source=NAME, taken_at=taken)
        ns_key = {n.metadata.name: n.metadata.uid for n in namespaces}
        snap.namespaces = [Namespace(key=n.metadata.uid, name=n.metadata.name) for n in namespaces]

        regions: dict[str, Region] = {}
        zones: dict[str, Zone] = {}
        node_key: dict[str, str] = {}
        for n in nodes:
            labels = n.metadata.labels or {}
            region = labels.get(REGION_LABEL) or self.config.region
            zone = labels.get(ZONE_LABEL, "")
            if region:
                regions.setdefault(region, Region(key=region, name=region))
            if zone:
                zones.setdefault(zone, Zone(key=zone, name=zone, region=region))
            address = (
                next((a.address for a in (n.status.addresses or []) if a.type == "InternalIP"), "")
                if n.status
                else ""
            )
            node_key[n.metadata.name] = n.metadata.uid
            snap.nodes.append(Node(key=n.metadata.uid, name=n.metadata.name, address=address))
            snap.hosts.append(
                Host(key=n.metadata.uid, name=n.metadata.name, zone=zone, region=region, address=address)
            )
        snap.regions = list(regions.values())
        snap.zones = list(zones.values())

        for p in pods:
            status, spec = p.status, p.spec
            snap.pods.append(
                Pod(
                    key=p.metadata.uid,
                    name=p.metadata.name,
                    namespace=ns_key.get(p.metadata.namespace, ""),
                    node=node_key.get(spec.node_name or "", "") if spec else "",
                    ip=(status.pod_ip or "") if status else "",
                    labels=tuple(sorted((p.metadata.labels or {}).items())),
                )
            )
        for s in services:
            spec = s.spec
            ips = tuple(spec.cluster_ips or ([spec.cluster_ip] if spec.cluster_ip else ()))
            snap.services.append(
                Service(
                    key=s.metadata.uid,
                    name=s.metadata.name,
                    namespace=ns_key.get(s.metadata.namespace, ""),
                    cluster_ips=tuple(ip for ip in ips if ip and ip != "None"),  # headless: clusterIP "None"
                    ports=tuple(port.port for port in spec.ports or []),
                    selector=tuple(sorted((spec.selector or {}).items())),
                )
            )
        return snap


def _cause(exc: BaseException) -> str:
    """A short human reason for a kubernetes client failure."""
    from kubernetes.client.exceptions import ApiException

    if isinstance(exc, ApiException):
        if exc.status == 401:
            return "authentication refused (bad or expired token / client certificate): HTTP 401"
        if exc.status == 403:
            return f"permission denied (RBAC: the account needs list on this resource): HTTP 403 {exc.reason}"
        return f"HTTP {exc.status} {exc.reason}"
    return f"cannot reach the API server: {type(exc).__name__}: {exc}"


def from_settings(config: Any) -> KubernetesConnector:
    """The connector for a settings section: a :class:`KubernetesConfig`, another pydantic model or a mapping."""
    if not isinstance(config, KubernetesConfig):
        data = config.model_dump() if isinstance(config, BaseModel) else dict(config)
        config = KubernetesConfig.model_validate(data)
    return KubernetesConnector(config)

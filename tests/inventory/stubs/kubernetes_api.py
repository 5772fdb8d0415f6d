"""A stub Kubernetes API server (core/v1 lists) serving the real API's response shapes.

``GET /api/v1/namespaces``, ``/api/v1/nodes``, ``/api/v1/pods``, ``/api/v1/services`` return the
``<Kind>List`` objects of the Kubernetes OpenAPI (``kind``, ``apiVersion``, ``metadata.resourceVersion``,
items without kind/apiVersion), honour ``limit``/``continue`` paging, and answer a bad bearer token with
a 401 ``Status``, as kube-apiserver does. The unmodified kubernetes Python client deserializes them.

The cluster: nodes node-a (zone-a) and node-b (zone-b) in region-1; namespaces default, kube-system,
payments; pods db-0 and api-7f9c (payments), coredns (kube-system, hostNetwork=false), kube-proxy on
node-a (hostNetwork); services payments/db and payments/api, default/kubernetes.
"""

from __future__ import annotations

import uuid
from typing import Any

from stubs.http_stub import JsonStub, Reply

TOKEN = "stub-token-0123456789"
TS = "2026-11-20T10:00:00Z"
_NS = uuid.UUID("6ba7b812-9dad-11d1-80b4-00c04fd430c8")


def uid(name: str) -> str:
    return str(uuid.uuid5(_NS, name))


def _meta(
    name: str, namespace: str | None = None, labels: dict[str, str] | None = None, rv: int = 100
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "uid": uid(f"{namespace}/{name}"),
        "resourceVersion": str(rv),
        "creationTimestamp": TS,
    }
    if namespace is not None:
        meta["namespace"] = namespace
    if labels:
        meta["labels"] = labels
    return meta


def _namespace(name: str) -> dict[str, Any]:
    return {
        "metadata": _meta(name, labels={"kubernetes.io/metadata.name": name}),
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    }


def _node(name: str, ip: str, zone: str, pod_cidr: str) -> dict[str, Any]:
    return {
        "metadata": {
            **_meta(
                name,
                labels={
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "topology.kubernetes.io/region": "region-1",
                    "topology.kubernetes.io/zone": zone,
                },
            ),
            "annotations": {"node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr], "providerID": f"kind://docker/kind/{name}"},
        "status": {
            "capacity": {
                "cpu": "4",
                "memory": "16331548Ki",
                "pods": "110",
                "ephemeral-storage": "102626232Ki",
            },
            "allocatable": {
                "cpu": "4",
                "memory": "16331548Ki",
                "pods": "110",
                "ephemeral-storage": "102626232Ki",
            },
            "conditions": [
                {
                    "type": "MemoryPressure",
                    "status": "False",
                    "lastHeartbeatTime": TS,
                    "lastTransitionTime": TS,
                    "reason": "KubeletHasSufficientMemory",
                    "message": "kubelet has sufficient memory available",
                },
                {
                    "type": "Ready",
                    "status": "True",
                    "lastHeartbeatTime": TS,
                    "lastTransitionTime": TS,
                    "reason": "KubeletReady",
                    "message": "kubelet is posting ready status",
                },
            ],
            "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": uuid.uuid5(_NS, "machine-" + name).hex,
                "systemUUID": uid("system-" + name),
                "bootID": uid("boot-" + name),
                "kernelVersion": "6.1.0-27-amd64",
                "osImage": "Debian GNU/Linux 12",
                "containerRuntimeVersion": "containerd://1.7.18",
                "kubeletVersion": "v1.31.2",
                "kubeProxyVersion": "v1.31.2",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
            "images": [],
        },
    }


def _pod(
    name: str,
    ns: str,
    node: str,
    ip: str,
    host_ip: str,
    labels: dict[str, str],
    port: int,
    host_network: bool = False,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [
            {
                "name": name.split("-")[0],
                "image": f"registry.example.org/{name.split('-')[0]}:1.0",
                "ports": [{"containerPort": port, "protocol": "TCP"}],
                "resources": {},
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File",
                "imagePullPolicy": "IfNotPresent",
            }
        ],
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 30,
        "dnsPolicy": "ClusterFirst",
        "serviceAccountName": "default",
        "serviceAccount": "default",
        "nodeName": node,
        "securityContext": {},
        "schedulerName": "default-scheduler",
        "priority": 0,
        "enableServiceLinks": True,
        "preemptionPolicy": "PreemptLowerPriority",
        "tolerations": [
            {
                "key": "node.kubernetes.io/not-ready",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300,
            }
        ],
    }
    if host_network:
        spec["hostNetwork"] = True
    return {
        "metadata": {**_meta(name, ns, labels), "generateName": name.rsplit("-", 1)[0] + "-"},
        "spec": spec,
        "status": {
            "phase": "Running",
            "conditions": [
                {"type": "Ready", "status": "True", "lastProbeTime": None, "lastTransitionTime": TS}
            ],
            "hostIP": host_ip,
            "hostIPs": [{"ip": host_ip}],
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "startTime": TS,
            "qosClass": "BestEffort",
            "containerStatuses": [
                {
                    "name": name.split("-")[0],
                    "state": {"running": {"startedAt": TS}},
                    "lastState": {},
                    "ready": True,
                    "restartCount": 0,
                    "image": f"registry.example.org/{name.split('-')[0]}:1.0",
                    "imageID": "registry.example.org/x@sha256:" + "0" * 64,
                    "containerID": "containerd://" + uuid.uuid5(_NS, "c-" + name).hex * 2,
                    "started": True,
                }
            ],
        },
    }


def _service(
    name: str, ns: str, ip: str, ports: list[tuple[str, int, int]], selector: dict[str, str] | None
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "ports": [{"name": n, "protocol": "TCP", "port": p, "targetPort": t} for n, p, t in ports],
        "clusterIP": ip,
        "clusterIPs": [ip],
        "type": "ClusterIP",
        "sessionAffinity": "None",
        "ipFamilies": ["IPv4"],
        "ipFamilyPolicy": "SingleStack",
        "internalTrafficPolicy": "Cluster",
    }
    if selector:
        spec["selector"] = selector
    return {"metadata": _meta(name, ns), "spec": spec, "status": {"loadBalancer": {}}}


NAMESPACES = [_namespace(n) for n in ("default", "kube-system", "payments")]
NODES = [
    _node("node-a", "192.0.2.21", "zone-a", "10.244.0.0/24"),
    _node("node-b", "192.0.2.22", "zone-b", "10.244.1.0/24"),
]
PODS = [
    _pod("db-0", "payments", "node-a", "10.244.0.10", "192.0.2.21", {"app": "db", "tier": "data"}, 5432),
    _pod("api-7f9c", "payments", "node-b", "10.244.1.11", "192.0.2.22", {"app": "api"}, 8080),
    _pod("coredns-5d78c", "kube-system", "node-b", "10.244.1.2", "192.0.2.22", {"k8s-app": "kube-dns"}, 53),
    _pod(
        "kube-proxy-x2x9",
        "kube-system",
        "node-a",
        "192.0.2.21",
        "192.0.2.21",
        {"k8s-app": "kube-proxy"},
        10256,
        host_network=True,
    ),
]
SERVICES = [
    _service("kubernetes", "default", "10.96.0.1", [("https", 443, 6443)], None),
    _service("db", "payments", "10.96.10.5", [("pg", 5432, 5432)], {"app": "db"}),
    _service("api", "payments", "10.96.10.6", [("http", 80, 8080), ("metrics", 9090, 9090)], {"app": "api"}),
]
KINDS = {
    "namespaces": ("NamespaceList", NAMESPACES),
    "nodes": ("NodeList", NODES),
    "pods": ("PodList", PODS),
    "services": ("ServiceList", SERVICES),
}


class KubernetesStub(JsonStub):
    """kube-apiserver's core/v1 list endpoints with bearer-token auth."""

    def __init__(self, token: str = TOKEN) -> None:
        super().__init__()
        self.token = token
        self.resource_version = 4242

    def handle(
        self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str], body: Any
    ) -> Reply:
        if headers.get("authorization") != f"Bearer {self.token}":
            return _status(401, "Unauthorized", "Unauthorized")
        parts = path.strip("/").split("/")
        if parts[:2] != ["api", "v1"] or method != "GET":
            return _status(404, "NotFound", "the server could not find the requested resource")
        namespace = None
        if len(parts) == 5 and parts[2] == "namespaces":  # /api/v1/namespaces/<ns>/<kind>
            namespace, kind = parts[3], parts[4]
        elif len(parts) == 3:
            kind = parts[2]
        else:
            return _status(404, "NotFound", "the server could not find the requested resource")
        if kind not in KINDS:
            return _status(404, "NotFound", "the server could not find the requested resource")
        list_kind, items = KINDS[kind]
        if namespace is not None:
            items = [i for i in items if i["metadata"].get("namespace") == namespace]
        start = int(query.get("continue", ["0"])[0] or 0)
        limit = int(query.get("limit", ["0"])[0] or 0)
        page = items[start : start + limit] if limit else items[start:]
        meta: dict[str, Any] = {"resourceVersion": str(self.resource_version)}
        if limit and start + limit < len(items):
            meta["continue"] = str(start + limit)
            meta["remainingItemCount"] = len(items) - start - limit
        return 200, {"kind": list_kind, "apiVersion": "v1", "metadata": meta, "items": page}, {}


def _status(code: int, reason: str, message: str) -> Reply:
    return (
        code,
        {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        },
        {},
    )

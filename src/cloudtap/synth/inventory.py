"""The synthetic cloud as a static inventory file (``cloudtap synth --inventory FILE.yaml``).

One region (named after the scenario), the hosts with their underlay addresses, one project per
tenant with its network (segment: the VNI under VXLAN / GRE-TEB, else the VLAN when tagged) and
subnet, and every VM with its interface (MAC, IP). ``valid_from`` is the scenario start, so the
synthetic capture is tagged with it. Format: docs/inventory.md.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import yaml

from cloudtap.schema.address import mac_to_text
from cloudtap.synth.cloud import Cloud, build_cloud
from cloudtap.synth.scenario import Scenario


def _segment(scenario: Scenario, cloud: Cloud, p: int) -> int | None:
    if scenario.encapsulation in ("vxlan", "gre-teb"):
        return int(cloud.project_vni[p])
    vlan = int(cloud.project_vlan[p])
    return vlan or None


def static_inventory(scenario: Scenario, cloud: Cloud | None = None) -> dict[str, Any]:
    """The scenario's cloud in the static inventory format (a YAML-ready mapping)."""
    cloud = cloud or build_cloud(scenario)
    region = scenario.name
    ip = ipaddress.IPv4Address
    doc: dict[str, Any] = {
        "valid_from": scenario.start.isoformat().replace("+00:00", "Z"),
        "regions": [{"name": region}],
        "projects": [{"name": name, "region": region} for name in cloud.project_names],
        "hosts": [
            {"name": name, "region": region, "address": str(ip(int(cloud.host_ip[h])))}
            for h, name in enumerate(cloud.host_names)
        ],
        "networks": [],
        "subnets": [],
        "vms": [],
    }
    for p, name in enumerate(cloud.project_names):
        net: dict[str, Any] = {"name": f"{name}-net", "project": name}
        seg = _segment(scenario, cloud, p)
        if seg is not None:
            net["segment"] = seg
        doc["networks"].append(net)
        doc["subnets"].append(
            {"name": f"{name}-subnet", "cidr": cloud.project_subnets[p], "network": f"{name}-net", "project": name}
        )
    for i, name in enumerate(cloud.vm_names):
        p = int(cloud.vm_project[i])
        project = cloud.project_names[p]
        doc["vms"].append(
            {
                "name": name,
                "project": project,
                "host": cloud.host_names[int(cloud.vm_host[i])],
                "state": "ACTIVE",
                "tags": [f"role={cloud.vm_roles[i]}"],
                "interfaces": [
                    {
                        "mac": mac_to_text(int(cloud.vm_mac[i])),
                        "ips": [str(ip(int(cloud.vm_ip[i])))],
                        "network": f"{project}-net",
                        "subnet": f"{project}-subnet",
                    }
                ],
            }
        )
    return doc


def write_static_inventory(scenario: Scenario, path: str | Path, cloud: Cloud | None = None) -> Path:
    """Write :func:`static_inventory` as YAML to ``path``; returns the path."""
    out = Path(path)
    text = "# cloudtap static inventory of synthetic scenario " + scenario.name + "\n"
    text += yaml.safe_dump(static_inventory(scenario, cloud), sort_keys=False)
    out.write_text(text, encoding="utf-8")
    return out

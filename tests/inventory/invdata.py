"""Small inventories for the inventory tests."""

from __future__ import annotations

from cloudtap.inventory.model import VM, Host, Interface, Network, Project, Region, Snapshot, Subnet

T0 = 1_700_000_000_000_000_000
HOUR = 3_600_000_000_000


def two_tenants(
    taken_at: int = T0, db_host: str = "hv-01", db_name: str = "db-01", source: str = "static"
) -> Snapshot:
    """Two projects whose subnets overlap (10.0.0.0/24), told apart by their VLAN; one VM each plus a web VM."""
    return Snapshot(
        source=source,
        taken_at=taken_at,
        regions=[Region("eu", "eu-west")],
        projects=[Project("pay", "payments", "eu"), Project("shop", "shop", "eu")],
        hosts=[
            Host("hv-01", "hv-01", region="eu", address="192.168.0.11"),
            Host("hv-02", "hv-02", region="eu"),
        ],
        networks=[Network("pay-net", "pay-net", "pay", 101), Network("shop-net", "shop-net", "shop", 102)],
        subnets=[
            Subnet("pay-sub", "pay-sub", "10.0.0.0/24", "pay-net", "pay"),
            Subnet("shop-sub", "shop-sub", "10.0.0.0/24", "shop-net", "shop"),
            Subnet("v6", "v6", "fd00::/64", "shop-net", "shop"),
        ],
        vms=[
            VM("pay/db", db_name, "pay", db_host, "ACTIVE"),
            VM("shop/db", "db-01", "shop", "hv-02", "ACTIVE"),
            VM("shop/web", "web-01", "shop", "hv-02", "ACTIVE"),
        ],
        interfaces=[
            Interface("m1", "fa:16:3e:00:00:01", ("10.0.0.5",), "pay/db", "pay-net", "pay-sub"),
            Interface("m2", "fa:16:3e:00:00:02", ("10.0.0.5",), "shop/db", "shop-net", "shop-sub"),
            Interface("m3", "fa:16:3e:00:00:03", ("10.0.0.9", "fd00::9"), "shop/web", "shop-net"),
        ],
    )

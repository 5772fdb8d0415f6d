"""OpenStack connector: the real openstacksdk against a stub Keystone/Nova/Neutron (tests/inventory/stubs)."""

from __future__ import annotations

import socket

import pytest

pytest.importorskip("openstack")
# openstacksdk warns about its own internals (RemovedInSDK50Warning...); not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning", "ignore::DeprecationWarning")

from stubs.openstack_api import PASSWORD, PROJECTS, USER, uid  # noqa: E402

from cloudtap.inventory.connectors.base import Connector, ConnectorError  # noqa: E402
from cloudtap.inventory.connectors.openstack import OpenStackConfig, OpenStackConnector, from_settings  # noqa: E402


def _connector(auth_url: str, password: str = PASSWORD) -> OpenStackConnector:
    return OpenStackConnector(OpenStackConfig(auth_url=auth_url, username=USER, password=password))


def test_snapshot_content(openstack_stub) -> None:
    conn = _connector(openstack_stub.auth_url)
    assert isinstance(conn, Connector) and conn.name == "openstack"
    snap = conn.fetch()
    assert snap.source == "openstack" and snap.taken_at > 0
    assert [r.key for r in snap.regions] == ["RegionOne"]
    assert [(z.name, z.region) for z in snap.zones] == [("az1", "RegionOne"), ("az2", "RegionOne")]
    assert {p.name: p.key for p in snap.projects} == PROJECTS
    hosts = {h.key: h for h in snap.hosts}
    assert sorted(hosts) == ["compute-01", "compute-02"]
    assert (hosts["compute-02"].zone, hosts["compute-02"].address) == ("az2", "192.0.2.12")

    nets = {n.name: n for n in snap.networks}
    assert (nets["payments-net"].segment, nets["web-net"].segment) == (1001, 200)
    assert nets["payments-net"].project == PROJECTS["payments"]
    subnets = {s.name: s for s in snap.subnets}
    assert subnets["payments-subnet"].cidr == "10.10.0.0/24"
    assert subnets["payments-subnet"].network == nets["payments-net"].key

    vms = {v.name: v for v in snap.vms}
    assert sorted(vms) == ["app-01", "db-01", "web-01"]
    db = vms["db-01"]
    assert (db.key, db.project, db.host, db.state) == (
        uid("server-db-01"),
        PROJECTS["payments"],
        "compute-01",
        "ACTIVE",
    )
    assert "role=db" in db.tags
    assert vms["web-01"].project == PROJECTS["web"]

    # VM interfaces only (the DHCP port is left out), with Nova/OVS tap names
    assert len(snap.interfaces) == 4
    (nic,) = [i for i in snap.interfaces if i.vm == db.key]
    assert (nic.mac, nic.ips) == ("fa:16:3e:00:00:01", ("10.10.0.5",))
    assert (nic.network, nic.subnet) == (nets["payments-net"].key, subnets["payments-subnet"].key)
    assert nic.device == "tap" + nic.key[:11] and len(nic.device) == 14
    web_nics = sorted((i.mac, i.ips, i.network) for i in snap.interfaces if i.vm == vms["web-01"].key)
    assert web_nics == [
        ("fa:16:3e:00:01:01", ("10.20.0.5",), nets["web-net"].key),
        ("fa:16:3e:00:01:02", ("10.10.0.7",), nets["payments-net"].key),
    ]
    assert "10.10.0.2" not in {ip for i in snap.interfaces for ip in i.ips}


def test_live_migration_shows_in_next_snapshot(openstack_stub) -> None:
    conn = from_settings({"auth_url": openstack_stub.auth_url, "username": USER, "password": PASSWORD})
    assert {v.name: v.host for v in conn.fetch().vms}["db-01"] == "compute-01"
    openstack_stub.move_server("db-01", "compute-02")
    assert {v.name: v.host for v in conn.fetch().vms}["db-01"] == "compute-02"


def test_wrong_password_is_a_clear_error(openstack_stub) -> None:
    with pytest.raises(ConnectorError) as err:
        _connector(openstack_stub.auth_url, password="nope").fetch()
    msg = str(err.value)
    assert msg.startswith(f"openstack connector ({openstack_stub.auth_url}):")
    assert "authentication refused" in msg and "401" in msg
    # nothing but the token request was attempted
    assert [p for _, p in openstack_stub.requests if "auth/tokens" not in p and p != "/identity/v3"] in (
        [],
        ["/identity"],
    )


def test_server_down_is_a_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/identity/v3"
    with pytest.raises(
        ConnectorError, match=r"^openstack connector \(.*\): authentication failed: cannot reach"
    ):
        _connector(url).fetch()


def test_config_rejects_unknown_keys() -> None:
    with pytest.raises(ValueError, match="pasword"):
        OpenStackConfig.model_validate(
            {"auth_url": "http://x/v3", "username": "u", "password": "p", "pasword": "p"}
        )
    assert "secret" not in repr(OpenStackConfig(auth_url="http://x/v3", username="u", password="secret"))

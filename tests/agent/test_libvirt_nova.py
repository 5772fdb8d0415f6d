"""nova's metadata in libvirt domain XML: instance name, flavor, owner project and user."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudtap.agent.libvirt import MAX_TEXT, DomainIndex, NovaInstance, parse_domain_xml

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _domain(metadata: str, name: str = "instance-00000001") -> str:
    return (f"<domain type='kvm'><name>{name}</name><uuid>AA11BB22-0000-4000-8000-000000000001</uuid>"
            f"<metadata>{metadata}</metadata><devices><interface type='bridge'><mac address='FA:16:3E:00:00:01'/>"
            "<target dev='tap00000001-aa'/></interface></devices></domain>")  # fmt: skip


def test_fixture_instance_has_nova_identity() -> None:
    dom = parse_domain_xml((FIXTURES / "instance-0000002a.xml").read_text())
    assert dom.nova == NovaInstance(name="web-frontend-1", flavor="m1.small",
                                    project_id="c2e4a6b8d0f24e6a8c0e2f4a6b8d0f21", project_name="demo",
                                    user_id="5b0c7a1e9d4f4c21a3e8f6b2d9c07e14", user_name="demo")  # fmt: skip
    assert parse_domain_xml((FIXTURES / "instance-0000002b.xml").read_text()).nova.name == "db-primary"  # type: ignore[union-attr]


@pytest.mark.parametrize("version", ["1.0", "1.1", "1.2", "2.0"])
def test_any_nova_namespace_version(version: str) -> None:
    meta = (f'<n:instance xmlns:n="http://openstack.org/xmlns/libvirt/nova/{version}"><n:name> shop-db </n:name>'
            '<n:flavor name="m1.tiny"/><n:owner><n:user uuid="U1">alice</n:user>'
            '<n:project uuid="P1">Shop</n:project></n:owner></n:instance>')  # fmt: skip
    nova = parse_domain_xml(_domain(meta)).nova
    assert nova == NovaInstance("shop-db", "m1.tiny", "p1", "Shop", "u1", "alice")


def test_partial_other_and_missing_metadata() -> None:
    only_name = '<nova:instance xmlns:nova="http://openstack.org/xmlns/libvirt/nova/1.1"><nova:name>x</nova:name></nova:instance>'
    assert parse_domain_xml(_domain(only_name)).nova == NovaInstance(name="x")
    # another application's metadata (and comments) are not nova's; a domain without metadata has none
    other = ('<!-- hi --><app:instance xmlns:app="http://example.org/app/1.0"><app:name>no</app:name></app:instance>'
             + only_name.replace("<nova:name>x", "<nova:name>y"))  # fmt: skip
    assert parse_domain_xml(_domain(other)).nova == NovaInstance(name="y")
    assert parse_domain_xml(_domain('<app:i xmlns:app="http://example.org/app/1.0"/>')).nova is None
    assert parse_domain_xml((FIXTURES / "web01.xml").read_text()).nova is None
    # an element in no namespace called like nova's is not nova's
    assert parse_domain_xml(_domain("<instance><name>z</name></instance>")).nova is None
    long = only_name.replace(">x<", ">" + "n" * 1000 + "<")
    assert parse_domain_xml(_domain(long)).nova.name == "n" * MAX_TEXT  # type: ignore[union-attr]


def test_index_finds_domains_by_name_and_notices_metadata_changes(tmp_path: Path) -> None:
    meta = '<nova:instance xmlns:nova="http://openstack.org/xmlns/libvirt/nova/1.1"><nova:name>{}</nova:name></nova:instance>'
    path = tmp_path / "instance-00000001.xml"
    path.write_text(_domain(meta.format("before")))
    index = DomainIndex([tmp_path])
    index.refresh()
    assert index.domain("instance-00000001").nova.name == "before"  # type: ignore[union-attr]
    assert index.domain("nope") is None
    path.write_text(_domain(meta.format("renamed-in-nova")))
    assert index.refresh()
    assert index.domain("instance-00000001").nova.name == "renamed-in-nova"  # type: ignore[union-attr]

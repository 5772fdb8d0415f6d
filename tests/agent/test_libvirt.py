"""libvirt domain XML -> VM identity of host interfaces."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest

from cloudtap.agent.libvirt import DomainIndex, DomainInterface, load_domains, parse_domain_xml

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _text(name: str) -> str:
    return (FIXTURES / name).read_text()


def test_openstack_bridge_instance() -> None:
    dom = parse_domain_xml(_text("instance-0000002a.xml"))
    assert dom.name == "instance-0000002a"
    assert dom.uuid == "7d3e9c2a-41f6-4b8e-9a0d-2c5f8e1b6a93"
    assert dom.interfaces == (
        DomainInterface("tap3f2a9c1e-7b", "fa:16:3e:5d:21:8c", "qbr3f2a9c1e-7b", "virtio"),
    )
    assert dom.interface("tap3f2a9c1e-7b") is dom.interfaces[0]
    assert dom.interface("vda") is None  # a disk target is not an interface


def test_live_status_network_vnet() -> None:
    """/run/libvirt/qemu files wrap the domain in <domstatus>; MACs are normalised to lower case."""
    dom = parse_domain_xml(_text("web01.xml"))
    assert (dom.name, dom.uuid) == ("web01", "1f4b8d2e-6a3c-4e9f-b7d1-5c2a8e0f3b64")
    (nic,) = dom.interfaces
    assert nic.target == "vnet0"
    assert nic.mac == "52:54:00:6b:3c:58"
    assert nic.source == "default"  # the network name (not its bridge virbr0)
    assert nic.model == "virtio"


def test_two_nics_in_document_order() -> None:
    dom = parse_domain_xml(_text("instance-0000002b.xml"))
    assert dom.name == "instance-0000002b"
    assert [tuple(n) for n in dom.interfaces] == [
        ("tapa1b2c3d4-e5", "fa:16:3e:a4:07:1b", "br-int", "virtio"),
        ("tap0c9d8e7f-61", "fa:16:3e:3c:9e:52", "br-int", "e1000e"),
    ]


@pytest.mark.parametrize(
    "text",
    [
        "<domain type='kvm'><name>x</name><devices>",  # truncated
        "<network><name>default</name></network>",  # not a domain
        "<domain type='kvm'><uuid>1f4b8d2e-6a3c-4e9f-b7d1-5c2a8e0f3b64</uuid></domain>",  # no name
        "",
    ],
)
def test_bad_documents_raise_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        parse_domain_xml(text)


def test_interface_without_target_or_mac() -> None:
    """A persistent definition may leave the vnet name to libvirt: the NIC is kept, its target is None."""
    dom = parse_domain_xml(
        "<domain><name>d</name><devices><interface type='ethernet'><model type='virtio'/></interface>"
        "<interface type='direct'><source dev='eth1' mode='vepa'/><target dev='macvtap0'/></interface>"
        "</devices></domain>"
    )
    assert dom.uuid is None
    assert dom.interfaces == (
        DomainInterface(None, None, None, "virtio"),
        DomainInterface("macvtap0", None, "eth1", None),
    )


def test_load_domains_skips_broken_file_with_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shutil.copy(FIXTURES / "instance-0000002b.xml", tmp_path)
    broken = tmp_path / "instance-0000002c.xml"
    broken.write_text(_text("instance-0000002a.xml")[:1500])  # cut mid-document
    dangling = tmp_path / "gone.xml"
    os.symlink(tmp_path / "nowhere.xml", dangling)
    (tmp_path / "networks").mkdir()  # /etc/libvirt/qemu/networks: not a domain file
    (tmp_path / "instance-0000002b.xml.bak").write_text("junk")  # not *.xml

    with caplog.at_level(logging.WARNING, logger="cloudtap.agent.libvirt"):
        domains = load_domains([tmp_path])

    assert set(domains) == {"tapa1b2c3d4-e5", "tap0c9d8e7f-61"}
    assert domains["tapa1b2c3d4-e5"].name == "instance-0000002b"
    assert domains["tap0c9d8e7f-61"] is domains["tapa1b2c3d4-e5"]
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert str(broken) in warned
    assert str(dangling) in warned
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2


def test_first_directory_wins_and_missing_dirs_are_ignored(tmp_path: Path) -> None:
    """The live status (/run) outranks a stale definition (/etc) claiming the same device."""
    run, etc = tmp_path / "run", tmp_path / "etc"
    run.mkdir()
    etc.mkdir()
    shutil.copy(FIXTURES / "web01.xml", run)
    (etc / "old.xml").write_text(
        "<domain><name>old</name><devices><interface type='network'><mac address='52:54:00:00:00:01'/>"
        "<target dev='vnet0'/></interface><interface type='network'><target dev='vnet9'/></interface>"
        "</devices></domain>"
    )
    domains = load_domains([tmp_path / "absent", run, etc])
    assert domains["vnet0"].name == "web01"
    assert domains["vnet9"].name == "old"
    assert load_domains([tmp_path / "absent"]) == {}


def test_index_rereads_only_changed_files_and_warns_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "bad.xml").write_text("<domain>")
    index = DomainIndex([tmp_path])
    with caplog.at_level(logging.WARNING, logger="cloudtap.agent.libvirt"):
        assert index.refresh() is False  # nothing indexed yet
        assert index.refresh() is False
    assert len(caplog.records) == 1  # the bad file is reported once, not at every refresh
    assert index.lookup("tap3f2a9c1e-7b") is None

    shutil.copy(FIXTURES / "instance-0000002a.xml", tmp_path)
    assert index.refresh() is True
    found = index.lookup("tap3f2a9c1e-7b")
    assert found is not None
    assert found[0].uuid == "7d3e9c2a-41f6-4b8e-9a0d-2c5f8e1b6a93"
    assert found[1].mac == "fa:16:3e:5d:21:8c"
    assert index.refresh() is False

    (tmp_path / "instance-0000002a.xml").unlink()
    assert index.refresh() is True
    assert index.by_target == {}

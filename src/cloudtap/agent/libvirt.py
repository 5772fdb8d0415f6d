"""libvirt domain XML: which VM owns a host interface (tap/vnet name -> domain name, uuid, guest MAC).

OpenStack nova also writes what it knows of the instance into ``<metadata><nova:instance>`` (namespace
``http://openstack.org/xmlns/libvirt/nova/<version>``, any version accepted): the instance's name, flavor,
owner user and project (ids and names); :class:`NovaInstance` keeps them, so an agent can report its VMs'
business identity without any cloud API.

libvirt keeps two copies of each domain: the live status in ``/run/libvirt/qemu/<name>.xml`` (a
``<domstatus>`` wrapping the ``<domain>``, with the ``vnetN`` names the running VM really got) and the
persistent definition in ``/etc/libvirt/qemu/<name>.xml`` (OpenStack nova names its ports there:
``<target dev='tapXXXXXXXX-XX'/>``). Directories are read in order and the first claim of a target
name wins, so the live status (listed first by default) beats a stale definition.

The files are parsed with :mod:`xml.etree.ElementTree`: they are root-owned local files written by
libvirtd, not untrusted input, so defusedxml is not needed. A file that cannot be read or parsed is
skipped with a warning naming it, never fatal.
"""

from __future__ import annotations

import logging
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

log = logging.getLogger(__name__)

# <source> attributes naming what a NIC plugs into; a live type="network" NIC also names its bridge
_SOURCE_ATTRS = ("network", "bridge", "dev", "path", "name")
#: nova's metadata namespaces: ``.../nova/1.0``, ``1.1``, ``1.2``... (the version is not checked)
NOVA_NS_PREFIX = "http://openstack.org/xmlns/libvirt/nova/"
#: longest text kept from the metadata (nova's own limit for names is 255)
MAX_TEXT = 255


@dataclass(frozen=True)
class NovaInstance:
    """What nova wrote about the instance in the domain's ``<metadata>`` (``""`` when absent)."""

    name: str = ""  #: <nova:name>: the instance's display name
    flavor: str = ""  #: <nova:flavor name=...>
    project_id: str = ""  #: <nova:owner><nova:project uuid=...>
    project_name: str = ""  #: its text
    user_id: str = ""  #: <nova:owner><nova:user uuid=...>
    user_name: str = ""


class DomainInterface(NamedTuple):
    """One ``<interface>`` of a domain."""

    target: str | None  # <target dev=...>: the host-side interface name (tap..., vnetN)
    mac: str | None  # <mac address=...>: the guest's MAC, lower case
    source: str | None  # bridge or network name (<source bridge|network|dev=...>)
    model: str | None  # <model type=...>: virtio, e1000...


@dataclass(frozen=True)
class LibvirtDomain:
    """A libvirt domain: its name, uuid and network interfaces."""

    name: str
    uuid: str | None
    interfaces: tuple[DomainInterface, ...]
    nova: NovaInstance | None = None  #: nova's metadata, when the domain has some

    def interface(self, target: str) -> DomainInterface | None:
        """Return the interface whose ``<target dev>`` is ``target``, or None."""
        for nic in self.interfaces:
            if nic.target == target:
                return nic
        return None


def _attr(element: ET.Element | None, name: str) -> str | None:
    if element is None:
        return None
    value = element.get(name)
    return value.strip() if value else None


def _parse_interface(element: ET.Element) -> DomainInterface:
    source_el = element.find("source")
    source = None
    for name in _SOURCE_ATTRS:
        source = _attr(source_el, name)
        if source:
            break
    mac = _attr(element.find("mac"), "address")
    return DomainInterface(
        target=_attr(element.find("target"), "dev"),
        mac=mac.lower() if mac else None,
        source=source,
        model=_attr(element.find("model"), "type"),
    )


def _local(tag: object) -> tuple[str, str]:
    """``(namespace, local name)`` of an element tag (comments and PIs have no str tag)."""
    if not isinstance(tag, str):
        return "", ""
    if tag.startswith("{"):
        ns, _, local = tag[1:].partition("}")
        return ns, local
    return "", tag


def _clip(value: str | None) -> str:
    return (value or "").strip()[:MAX_TEXT]


def _nova_child(parent: ET.Element, ns: str, local: str) -> ET.Element | None:
    return parent.find(f"{{{ns}}}{local}")


def parse_nova_metadata(domain: ET.Element) -> NovaInstance | None:
    """nova's ``<nova:instance>`` of a ``<domain>`` element, or None when it has none.

    Any namespace starting with :data:`NOVA_NS_PREFIX` is accepted; missing parts are ``""``.
    """
    metadata = domain.find("metadata")
    if metadata is None:
        return None
    for element in metadata:
        ns, local = _local(element.tag)
        if local != "instance" or not ns.startswith(NOVA_NS_PREFIX):
            continue
        name_el = _nova_child(element, ns, "name")
        flavor_el = _nova_child(element, ns, "flavor")
        owner = _nova_child(element, ns, "owner")
        user = _nova_child(owner, ns, "user") if owner is not None else None
        project = _nova_child(owner, ns, "project") if owner is not None else None
        return NovaInstance(
            name=_clip(name_el.text if name_el is not None else None),
            flavor=_clip(flavor_el.get("name") if flavor_el is not None else None),
            project_id=_clip(project.get("uuid") if project is not None else None).lower(),
            project_name=_clip(project.text if project is not None else None),
            user_id=_clip(user.get("uuid") if user is not None else None).lower(),
            user_name=_clip(user.text if user is not None else None),
        )
    return None


def parse_domain_xml(text: str) -> LibvirtDomain:
    """Parse a libvirt domain definition or live status file.

    Args:
        text: the XML: a ``<domain>`` document, or a ``<domstatus>`` wrapping one (``/run/libvirt``).

    Returns:
        The domain's name, uuid, interfaces (in document order) and nova metadata (when present).

    Raises:
        ValueError: the text is not well-formed XML or holds no named ``<domain>``.
    """
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise ValueError(f"malformed XML: {exc}") from exc
    domain = root if root.tag == "domain" else root.find("domain") if root.tag == "domstatus" else None
    if domain is None:
        raise ValueError(f"not a libvirt domain (root element <{root.tag}>)")
    name = (domain.findtext("name") or "").strip()
    if not name:
        raise ValueError("libvirt domain without <name>")
    uuid = (domain.findtext("uuid") or "").strip().lower() or None
    nics = tuple(_parse_interface(el) for el in domain.findall("devices/interface"))
    return LibvirtDomain(name=name, uuid=uuid, interfaces=nics, nova=parse_nova_metadata(domain))


class DomainIndex:
    """Target-name index over libvirt directories, re-reading only files that changed.

    Args:
        dirs: directories of ``*.xml`` domain files, highest priority first (missing ones are fine).
    """

    def __init__(self, dirs: Iterable[str | os.PathLike[str]]) -> None:
        self.dirs = tuple(Path(d) for d in dirs)
        # path -> (file signature, parsed domain or None when the file is bad)
        self._files: dict[Path, tuple[tuple[int, int, int], LibvirtDomain | None]] = {}
        self._by_target: dict[str, LibvirtDomain] = {}
        self._by_name: dict[str, LibvirtDomain] = {}
        self.version = 0  # incremented whenever a refresh changes the index

    @property
    def by_target(self) -> dict[str, LibvirtDomain]:
        """Domains by interface target name (as of the last :meth:`refresh`)."""
        return dict(self._by_target)

    def domain(self, name: str) -> LibvirtDomain | None:
        """The domain called ``name`` (as of the last :meth:`refresh`), or None."""
        return self._by_name.get(name)

    def lookup(self, target: str) -> tuple[LibvirtDomain, DomainInterface] | None:
        """Return the domain and interface whose ``<target dev>`` is ``target``, or None."""
        domain = self._by_target.get(target)
        if domain is None:
            return None
        nic = domain.interface(target)
        return None if nic is None else (domain, nic)

    def refresh(self) -> bool:
        """Re-scan the directories; parse new or changed files. Returns True if the index changed."""
        seen: dict[Path, tuple[tuple[int, int, int], LibvirtDomain | None]] = {}
        by_target: dict[str, LibvirtDomain] = {}
        by_name: dict[str, LibvirtDomain] = {}
        for directory in self.dirs:
            for path, signature in _xml_files(directory):
                cached = self._files.get(path)
                if cached is not None and cached[0] == signature:
                    domain = cached[1]
                else:
                    domain = _load_file(path)
                seen[path] = (signature, domain)
                if domain is None:
                    continue
                by_name.setdefault(domain.name, domain)
                for nic in domain.interfaces:
                    if nic.target and nic.target not in by_target:
                        by_target[nic.target] = domain
        self._files = seen
        changed = by_target != self._by_target
        self._by_target = by_target
        self._by_name = by_name
        self.version += changed
        return changed


def _xml_files(directory: Path) -> list[tuple[Path, tuple[int, int, int]]]:
    """``*.xml`` entries of ``directory`` (not recursive) with a change signature, sorted by name."""
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except FileNotFoundError:
        return []
    except OSError as exc:
        log.warning("cannot list libvirt directory %s: %s", directory, exc)
        return []
    out = []
    for entry in entries:
        if not entry.name.endswith(".xml"):
            continue
        try:
            st = entry.stat()  # follows symlinks
            if entry.is_dir():
                continue
            signature = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            signature = (-1, -1, -1)  # dangling link etc.: _load_file reports it
        out.append((Path(entry.path), signature))
    return out


def _load_file(path: Path) -> LibvirtDomain | None:
    try:
        return parse_domain_xml(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        log.warning("skipping libvirt domain file %s: %s", path, exc)
        return None


def load_domains(dirs: Iterable[str | os.PathLike[str]]) -> dict[str, LibvirtDomain]:
    """Read every ``*.xml`` domain file of ``dirs`` and index the domains by interface target name.

    Args:
        dirs: directories, highest priority first; missing directories are ignored.

    Returns:
        ``{target dev name: domain}``; unreadable or malformed files are skipped with a warning.
    """
    index = DomainIndex(dirs)
    index.refresh()
    return index.by_target

"""``write_pcap``: scenario -> pcap file + ground truth + inventory, vectorised end to end.

Steps: resolve the cloud, draw the sessions, plan every packet (numba), sort by time, compute
frame lengths, then assemble pcap records chunk by chunk into one reusable buffer (numba) and
write it. The truth table comes from the same plan; the inventory is written beside the pcap
as ``<pcap>.inventory.yaml``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import yaml

from cloudtap.schema.packet import LINKTYPE_ETHERNET
from cloudtap.synth._build import assemble, frame_lengths
from cloudtap.synth._dtypes import P_ERRORS
from cloudtap.synth.cloud import build_cloud
from cloudtap.synth.encap import ENCAP_CODES, ENCAP_ERSPAN2, default_mtu, erspan_session, wire_table
from cloudtap.synth.request_truth import build_request_truth
from cloudtap.synth.scenario import Scenario
from cloudtap.synth.sessions import build_sessions, plan_packets
from cloudtap.synth.truth import build_truth

PCAP_MAGIC_NS = 0xA1B23C4D
PCAP_MAGIC_US = 0xA1B2C3D4
CHUNK_PACKETS = 1 << 18
PAYLOAD_FILL = 0


def payload_seed(scenario: Scenario) -> int:
    """Seed of the per-exchange payload choices (templates, literals, errors)."""
    return (scenario.seed * 0x9E3779B1 + 0x51ED) & 0x7FFFFFFFFFFFFFFF


@dataclass
class SynthResult:
    """What :func:`write_pcap` produced.

    Attributes:
        path: the pcap file.
        packets: frames written.
        flows: rows of ``truth``.
        bytes: size of the pcap file in bytes.
        truth: ground-truth flow table (see :mod:`cloudtap.synth.truth`).
        inventory: the cloud (projects, hosts, VMs), also written to ``<pcap>.inventory.yaml``.
        requests: ground-truth requests of the services with an ``app`` (see
            :mod:`cloudtap.synth.request_truth`).
    """

    path: Path
    packets: int
    flows: int
    bytes: int
    truth: pa.Table
    inventory: dict[str, Any]
    requests: pa.Table | None = None


def inventory_path(pcap: str | Path) -> Path:
    """Where the inventory of a synthetic pcap is written: ``<pcap>.inventory.yaml``."""
    return Path(f"{pcap}.inventory.yaml")


def pcap_header(snaplen: int, ts_precision: str) -> bytes:
    """Little-endian pcap global header for Ethernet frames."""
    magic = PCAP_MAGIC_NS if ts_precision == "ns" else PCAP_MAGIC_US
    return struct.pack("<IHHiIII", magic, 2, 4, 0, 0, snaplen, LINKTYPE_ETHERNET)


def _inventory(scenario: Scenario, inv: dict[str, Any]) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "scenario": scenario.name,
        "start": scenario.start.isoformat(),
        "duration_s": scenario.duration,
        "encapsulation": scenario.encapsulation,
    }
    if ENCAP_CODES[scenario.encapsulation] == ENCAP_ERSPAN2:
        for p, proj in enumerate(inv["projects"]):
            proj["erspan_session"] = erspan_session(p)
    return {**meta, **inv}


def write_pcap(
    scenario: Scenario,
    path: str | Path,
    progress: Callable[[int, int], None] | None = None,
) -> SynthResult:
    """Synthesise the scenario's traffic into a pcap file, with its ground truth.

    Args:
        scenario: the scenario (see :func:`cloudtap.synth.load_scenario`).
        path: output pcap; ``<path>.inventory.yaml`` is written beside it.
        progress: called as ``progress(frames_written, frames_total)`` after each chunk.

    Returns:
        A :class:`SynthResult`.

    Raises:
        ConfigError: the scenario refers to unknown VMs, hosts or services.
        OSError: the output cannot be written.
    """
    path = Path(path)
    cloud = build_cloud(scenario)
    sessions = build_sessions(scenario, cloud)
    mss = (scenario.mtu or default_mtu(scenario.encapsulation)) - 40
    end_ns = scenario.start_ns + scenario.duration_ns
    plan, hs_times, trunc = plan_packets(sessions, end_ns, mss)
    wire = wire_table(sessions, cloud, scenario.encapsulation)
    n = int(plan.shape[0])
    ip_len = np.empty(n, np.uint32)
    wire_len = np.empty(n, np.uint32)
    cap_len = np.empty(n, np.uint32)
    frame_lengths(plan, wire, scenario.snaplen, ip_len, wire_len, cap_len)
    host_ipid = np.random.default_rng(scenario.seed ^ 0x5EED).integers(0, 65536, len(cloud.host_names))
    host_seq = np.zeros(len(cloud.host_names), np.int64)
    ts_div = 1 if scenario.ts_precision == "ns" else 1000
    apps = sessions.apps
    assert apps is not None
    err_share = np.ascontiguousarray(sessions.params[:, P_ERRORS])
    rec = cap_len.astype(np.int64) + 16
    if progress is not None:
        progress(0, n)
    total = 24
    with path.open("wb") as f:
        f.write(pcap_header(scenario.snaplen, scenario.ts_precision))
        buf = np.empty(0, np.uint8)
        for lo in range(0, n, CHUNK_PACKETS):
            hi = min(lo + CHUNK_PACKETS, n)
            offs = np.zeros(hi - lo, np.int64)
            np.cumsum(rec[lo : hi - 1], out=offs[1:])
            size = int(offs[-1] + rec[hi - 1])
            if buf.shape[0] < size:
                buf = np.empty(size, np.uint8)
            assemble(
                buf,
                offs,
                plan[lo:hi],
                wire,
                ip_len[lo:hi],
                wire_len[lo:hi],
                cap_len[lo:hi],
                ts_div,
                mss,
                PAYLOAD_FILL,
                cloud.collector_ip,
                cloud.collector_mac,
                host_ipid,
                host_seq,
                apps.pool,
                apps.tmpl,
                apps.svc,
                err_share,
                payload_seed(scenario),
            )
            f.write(buf[:size].data)
            total += size
            if progress is not None:
                progress(hi, n)
    truth = build_truth(sessions, cloud, wire, plan, ip_len, wire_len, hs_times, trunc)
    requests = build_request_truth(sessions, cloud, wire, plan, ts_div, payload_seed(scenario))
    inventory = _inventory(scenario, cloud.inventory())
    inventory_path(path).write_text(yaml.safe_dump(inventory, sort_keys=False), encoding="utf-8")
    return SynthResult(
        path=path,
        packets=n,
        flows=truth.num_rows,
        bytes=total,
        truth=truth,
        inventory=inventory,
        requests=requests,
    )

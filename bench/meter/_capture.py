"""The benchmark capture: ``cloudtap synth`` output, cached in the out dir by scenario hash."""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow.parquet as pq

import cloudtap.synth as synth_pkg
from cloudtap.synth.scenario import (
    BUILTIN_NAMES,
    Scenario,
    resolve_scenario,
    scenarios_dir,
    with_overrides,
)

#: Scenario time synthesised to learn a scenario's packet rate before scaling it to ``--packets``.
PROBE_SECONDS = 10.0


@dataclass
class Capture:
    """A cached synthetic capture and its ground-truth size."""

    path: Path
    scenario: str
    duration_s: float
    key: str
    packets: int
    flows_truth: int
    bytes: int
    synth_seconds: float
    cached: bool = False

    def to_json(self) -> dict[str, object]:
        """A JSON-able description."""
        return {**asdict(self), "path": str(self.path)}


def scenario_file(ref: str) -> Path:
    """The YAML of a built-in name (never confused with a folder of that name), or ``ref`` as a path."""
    if ref in BUILTIN_NAMES:
        return scenarios_dir() / f"{ref}.yaml"
    return Path(ref).resolve()


def _synth_code_digest() -> str:
    digest = hashlib.sha256()
    for src in sorted(Path(synth_pkg.__file__).parent.rglob("*")):
        if src.suffix in (".py", ".yaml") and src.is_file():
            digest.update(src.name.encode())
            digest.update(src.read_bytes())
    return digest.hexdigest()


def scenario_key(scenario: Scenario) -> str:
    """Hash of the scenario and of the synthesiser's code: a changed generator invalidates the cache."""
    digest = hashlib.sha256(scenario.model_dump_json().encode())
    digest.update(_synth_code_digest().encode())
    return digest.hexdigest()[:12]


def synthesize(ref: str, duration_s: float | None, out_dir: Path) -> Capture:
    """Write (or reuse) the capture of scenario ``ref`` with an optional duration override.

    Args:
        ref: built-in scenario name or YAML path.
        duration_s: scenario duration override in seconds (None keeps the scenario's).
        out_dir: cache folder.

    Returns:
        The :class:`Capture`.
    """
    scenario = resolve_scenario(scenario_file(ref))
    if duration_s is not None:
        scenario = with_overrides(scenario, duration=duration_s)
    key = scenario_key(scenario)
    stem = out_dir / f"capture-{scenario.name}-{key}"
    pcap, meta_path, truth = (
        stem.with_suffix(".pcap"),
        stem.with_suffix(".json"),
        stem.with_suffix(".truth.parquet"),
    )
    if meta_path.is_file() and pcap.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("bytes") == pcap.stat().st_size:
            return Capture(**{**meta, "path": pcap, "cached": True})
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = pcap.with_suffix(".pcap.part")
    cmd = [sys.executable, "-m", "cloudtap.cli.main", "synth", str(scenario_file(ref)), "-o", str(tmp)]
    cmd += ["--truth", str(truth), "-q"]
    if duration_s is not None:
        cmd += ["--duration", repr(float(duration_s))]
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise RuntimeError(f"cloudtap synth failed ({done.returncode}): {done.stderr.strip()[-400:]}")
    seconds = time.perf_counter() - started
    tmp.replace(pcap)
    Path(f"{tmp}.inventory.yaml").replace(Path(f"{pcap}.inventory.yaml"))
    capture = Capture(
        path=pcap,
        scenario=scenario.name,
        duration_s=scenario.duration,
        key=key,
        packets=_count_packets(pcap),
        flows_truth=pq.ParquetFile(truth).metadata.num_rows,
        bytes=pcap.stat().st_size,
        synth_seconds=seconds,
    )
    meta_path.write_text(
        json.dumps({k: v for k, v in capture.to_json().items() if k not in ("path", "cached")})
    )
    return capture


def _count_packets(pcap: Path) -> int:
    from cloudtap.capture.pcap_file import CaptureFile

    with CaptureFile(pcap) as f:
        return sum(len(b) for b in f.batches())


def bench_capture(ref: str, packets: int | None, out_dir: Path) -> Capture:
    """The capture for a run: the scenario as written, or rescaled in time to about ``packets`` frames.

    The packet rate is learnt from a short (cached) probe of the same scenario.
    """
    if packets is None:
        return synthesize(ref, None, out_dir)
    base = resolve_scenario(scenario_file(ref))
    probe_s = min(base.duration, PROBE_SECONDS)
    probe = synthesize(ref, probe_s, out_dir)
    rate = probe.packets / probe_s if probe.packets else 1.0
    duration = math.ceil(packets / rate * 10) / 10
    return synthesize(ref, duration, out_dir)

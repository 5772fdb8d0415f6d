"""The contenders: how each tool is run on the capture, pinned to one core, and what it found."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from _procs import ProcRun, free_udp_port, pinned, run_measured, tool_version

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


@dataclass
class Context:
    """Where and how the tools run."""

    pcap: Path
    work: Path
    core: int
    side_core: int
    env: dict[str, str]
    timeout_s: float = 600.0


@dataclass
class Sample:
    """One timed run of a tool."""

    seconds: float
    maxrss_kb: int
    flows: int | None
    packets: int | None = None
    extra: dict[str, object] = field(default_factory=dict)


@dataclass
class Tool:
    """A benchmarked tool: what it needs installed, how its flows are counted, and how to run it."""

    name: str
    requires: str
    flow_unit: str
    run: Callable[[Context, int], Sample]
    version: Callable[[], str]
    is_module: bool = False

    def missing(self) -> str | None:
        """Why the tool cannot run here, or None."""
        if self.is_module:
            return (
                None if importlib.util.find_spec(self.requires) else f"python module {self.requires} missing"
            )
        return None if shutil.which(self.requires) else f"{self.requires} not on PATH"


def _int(pattern: str, text: str) -> int | None:
    match = re.search(pattern, text)
    return int(match.group(1)) if match else None


def nfdump_summary(flow_dir: Path) -> dict[str, int | None]:
    """Flow/packet totals of an nfdump directory, plus bidirectional 5-tuple aggregates (``-b``)."""
    info = subprocess.run(["nfdump", "-R", str(flow_dir), "-I"], capture_output=True, text=True).stdout
    agg = subprocess.run(
        ["nfdump", "-R", str(flow_dir), "-b", "-q", "-N", "-o", "csv"], capture_output=True, text=True
    ).stdout
    return {
        "records": _int(r"(?m)^Flows: (\d+)", info),
        "packets": _int(r"(?m)^Packets: (\d+)", info),
        "biflows_5tuple": sum(1 for line in agg.splitlines() if line[:1].isdigit()),
    }


def _fresh_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


# -- the libpcap read floor ----------------------------------------------------------------------
def run_tcpdump(ctx: Context, i: int) -> Sample:
    cmd = pinned(["tcpdump", "-r", str(ctx.pcap), "-w", "/dev/null"], ctx.core)
    proc = run_measured(cmd, ctx.work / "logs", f"tcpdump-{i}", ctx.timeout_s).check("tcpdump")
    return Sample(proc.seconds, proc.maxrss_kb, None, extra={"cpu_s": proc.cpu_seconds})


# -- cloudtap --------------------------------------------------------------------------------------
def cloudtap_cmd(ctx: Context, stages: bool = False) -> list[str]:
    cmd = [sys.executable, str(HERE / "worker_cloudtap.py"), str(ctx.pcap), "--core", str(ctx.core)]
    return pinned(cmd + (["--stages"] if stages else []), ctx.core)


def _cloudtap_json(proc: ProcRun) -> dict[str, object]:
    proc.check("cloudtap worker")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def warm_cloudtap(ctx: Context) -> None:
    """One throw-away run so numba's on-disk cache is compiled before anything is timed."""
    _cloudtap_json(
        run_measured(cloudtap_cmd(ctx), ctx.work / "logs", "cloudtap-warmup", ctx.timeout_s, ctx.env)
    )


def run_cloudtap(ctx: Context, i: int) -> Sample:
    proc = run_measured(
        cloudtap_cmd(ctx, stages=i == 0), ctx.work / "logs", f"cloudtap-{i}", ctx.timeout_s, ctx.env
    )
    out = _cloudtap_json(proc)
    extra = {k: v for k, v in out.items() if k not in ("first_s", "flows", "frames")}
    extra["process_wall_s"] = proc.seconds
    return Sample(float(out["first_s"]), proc.maxrss_kb, int(out["flows"]), int(out["frames"]), extra)


def cloudtap_version() -> str:
    import cloudtap

    return f"cloudtap {cloudtap.__version__}"


# -- softflowd -> nfcapd ---------------------------------------------------------------------------
def _start_nfcapd(ctx: Context, flow_dir: Path, port: int, i: int) -> subprocess.Popen[bytes]:
    (ctx.work / "nfcapd.pid").unlink(missing_ok=True)
    log = (ctx.work / "logs" / f"nfcapd-{i}.log").open("wb")
    cmd = ["nfcapd", "-w", str(flow_dir), "-p", str(port), "-b", "127.0.0.1", "-B", "8000000"]
    cmd += ["-P", str(ctx.work / "nfcapd.pid")]
    proc = subprocess.Popen(
        pinned(cmd, ctx.side_core), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )
    log.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if "Startup" in (ctx.work / "logs" / f"nfcapd-{i}.log").read_text(errors="replace"):
            return proc
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"nfcapd did not start: {(ctx.work / 'logs' / f'nfcapd-{i}.log').read_text()[-300:]}")


def run_softflowd(ctx: Context, i: int) -> Sample:
    (ctx.work / "logs").mkdir(parents=True, exist_ok=True)
    flow_dir = _fresh_dir(ctx.work / "nfcapd")
    port = free_udp_port()
    collector = _start_nfcapd(ctx, flow_dir, port, i)
    try:
        # softflowd 1.1 hangs when -c comes after -r: control socket and pidfile go first.
        cmd = ["softflowd", "-c", str(ctx.work / "softflowd.ctl"), "-p", str(ctx.work / "softflowd.pid")]
        cmd += [
            "-m",
            "1000000",
            "-r",
            str(ctx.pcap),
            "-n",
            f"127.0.0.1:{port}",
            "-v",
            "10",
            "-A",
            "milli",
            "-d",
        ]
        proc = run_measured(pinned(cmd, ctx.core), ctx.work / "logs", f"softflowd-{i}", ctx.timeout_s)
        proc.check("softflowd")
    finally:
        time.sleep(0.3)  # let the collector drain its socket
        collector.send_signal(signal.SIGTERM)
        try:
            collector.wait(timeout=20)
        except subprocess.TimeoutExpired:
            collector.kill()
            collector.wait()
    text = proc.stdout + proc.stderr
    received = nfdump_summary(flow_dir)
    extra: dict[str, object] = {
        "records_exported": _int(r"Flows exported: \d+ \((\d+) records\)", text),
        "nfcapd_records": received["records"],
        "nfcapd_packets": received["packets"],
        "nfcapd_biflows_5tuple": received["biflows_5tuple"],
        "expired_by_maxflows": _int(r"maxflows =\s+(\d+)", text),
        "cpu_s": proc.cpu_seconds,
    }
    flows = _int(r"Flows expired: (\d+)", text)
    return Sample(proc.seconds, proc.maxrss_kb, flows, _int(r"Packets processed: (\d+)", text), extra)


# -- nfpcapd ---------------------------------------------------------------------------------------
def run_nfpcapd(ctx: Context, i: int) -> Sample:
    flow_dir = _fresh_dir(ctx.work / "nfpcapd")
    cmd = pinned(["nfpcapd", "-r", str(ctx.pcap), "-w", str(flow_dir)], ctx.core)
    proc = run_measured(cmd, ctx.work / "logs", f"nfpcapd-{i}", ctx.timeout_s).check("nfpcapd")
    text = proc.stdout + proc.stderr
    got = nfdump_summary(flow_dir)
    extra = {
        "biflows_5tuple": got["biflows_5tuple"],
        "records_packets": got["packets"],
        "cpu_s": proc.cpu_seconds,
    }
    return Sample(proc.seconds, proc.maxrss_kb, got["records"], _int(r"Total: Processed: (\d+)", text), extra)


# -- NFStream --------------------------------------------------------------------------------------
def run_nfstream(ctx: Context, i: int) -> Sample:
    cmd = pinned(
        [sys.executable, str(HERE / "worker_nfstream.py"), str(ctx.pcap), "--core", str(ctx.core)], ctx.core
    )
    proc = run_measured(cmd, ctx.work / "logs", f"nfstream-{i}", ctx.timeout_s, ctx.env).check("nfstream")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    extra = {"process_wall_s": proc.seconds, "idle_timeout_s": out["idle_timeout_s"]}
    return Sample(float(out["seconds"]), proc.maxrss_kb, int(out["flows"]), int(out["packets"]), extra)


def nfstream_version() -> str:
    try:
        from importlib.metadata import version

        return f"nfstream {version('nfstream')}"
    except Exception:  # noqa: BLE001 - a version string is cosmetic
        return ""


TOOLS: tuple[Tool, ...] = (
    Tool(
        "cloudtap",
        "cloudtap",
        "bi flows (distinct flow_id)",
        run_cloudtap,
        cloudtap_version,
        is_module=True,
    ),
    Tool(
        "softflowd",
        "softflowd",
        "bi flows expired",
        run_softflowd,
        lambda: tool_version(["softflowd", "-h"], "version", r"softflowd version \d+(\.\d+)*"),
    ),
    Tool(
        "nfpcapd",
        "nfpcapd",
        "uni-directional records",
        run_nfpcapd,
        lambda: tool_version(["nfdump", "-V"], "version"),
    ),
    Tool("nfstream", "nfstream", "bi flows", run_nfstream, nfstream_version, is_module=True),
    Tool(
        "tcpdump",
        "tcpdump",
        "(reads only)",
        run_tcpdump,
        lambda: tool_version(["tcpdump", "--version"], "tcpdump"),
    ),
)
#: The read floor every meter is compared against.
FLOOR = "tcpdump"

# softflowd needs a collector too
NEEDS = {"softflowd": ("nfcapd", "nfdump"), "nfpcapd": ("nfdump",)}


def missing_reason(tool: Tool) -> str | None:
    """Why ``tool`` (or a helper it needs, e.g. nfcapd) cannot run here, or None."""
    reason = tool.missing()
    if reason:
        return reason
    for helper in NEEDS.get(tool.name, ()):
        if not shutil.which(helper):
            return f"{helper} not on PATH"
    return None


def child_env() -> dict[str, str]:
    """The environment of Python workers: numba's cache shared with the repo's."""
    env = dict(os.environ)
    env.setdefault("NUMBA_CACHE_DIR", str(REPO / ".numba-cache"))
    return env

"""PCAP retrieval from a 2 GB agent packet store: a 5-minute window, side by side with Stenographer.

1. Build the store: one 5-minute ``bench`` synth pass is fed ``--passes`` times (timestamps shifted by
   5 minutes each pass) through decode -> ``PacketStore.append`` (snap length 256, the agent default),
   until the store holds about 2 GB. The same frames (cut at 256 bytes, same times) are written to one
   pcapng for the peers.
2. cloudtap: retrieve a 5-minute window in the middle, (a) on the agent alone (query -> pcapng bytes),
   (b) end to end over HTTP: the agent control endpoint -> server retrieval (fetch, merge, write a
   file), as ``cloudtap pcap --local`` does; with and without a host filter.
3. Peers: ``editcap -A -B`` over the pcapng (time-window extraction, reads the whole file), and
   Stenographer (``stenographer``/``stenotype`` from apt; its ``stenoread`` is a curl+tcpdump script
   not shipped by Debian, so the same HTTPS query is made with curl): the pcapng is replayed with
   tcpreplay into a veth pair stenotype captures, at ``--steno-multiplier`` times the recorded pace
   so the window maps linearly to capture time.

Usage: ``python bench/analysis/pcap_retrieval.py [--passes 19] [--no-steno]``; results go to
``bench/results/pcap_retrieval.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
import types
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from cloudtap.agent.config import PacketsSection
from cloudtap.agent.control import ControlServer
from cloudtap.agent.packet_store import PacketStore
from cloudtap.capture.frames import FrameBatch
from cloudtap.capture.pcap_file import CaptureFile
from cloudtap.capture.pcapng_writer import interface_block, packet_blocks, section_header
from cloudtap.decode import decode_frames
from cloudtap.server.pcap import PcapRequest, Target, retrieve_to_file

REPO = Path(__file__).resolve().parents[2]
PASS_NS = 300 * 10**9
SNAP = 256
CERTS = Path("/etc/stenographer/certs")


def build(work: Path, passes: int) -> tuple[PacketStore, Path, dict[str, object]]:
    """Synthesise one pass, feed it ``passes`` times into the store and into the peers' pcapng."""
    from cloudtap.synth import builtin_scenario, write_pcap
    from cloudtap.synth.scenario import with_overrides

    one = work / "pass.pcap"
    write_pcap(with_overrides(builtin_scenario("bench"), duration="5m"), one)
    store = PacketStore(PacketsSection(enabled=True, directory=work / "store", max_disk_mib=4096, snaplen=SNAP,
                                       max_pending_mib=512))  # fmt: skip
    peer = work / "all.pcapng"
    t0 = time.perf_counter()
    feed_s = 0.0
    with CaptureFile(one) as cf, peer.open("wb") as out:
        out.write(section_header("pcap_retrieval bench") + interface_block(1, "bench", None, SNAP))
        batches = list(cf.batches(4096))
        lo32 = int(decode_frames(batches[0])["src_lo"][0]) & 0xFFFFFFFF
        timing_host = ".".join(str(lo32 >> s & 255) for s in (24, 16, 8, 0))
        for p in range(passes):
            for b in batches:
                shifted = FrameBatch(b.data, b.offset, b.cap_len, b.wire_len, b.ts_ns + p * PASS_NS, b.linktype,
                                     b.interface)  # fmt: skip
                t = time.perf_counter()
                store.append(shifted, decode_frames(shifted))
                feed_s += time.perf_counter() - t
                cut = FrameBatch(b.data, b.offset, np.minimum(b.cap_len, SNAP).astype(np.uint32), b.wire_len,
                                 shifted.ts_ns, b.linktype, b.interface)  # fmt: skip
                out.write(packet_blocks(cut, np.zeros(len(cut), np.int64)).tobytes())
    store.sync(600)
    return store, peer, {"build_s": time.perf_counter() - t0, "feed_s": feed_s, "host": timing_host}


def cloudtap_runs(store: PacketStore, lo: int, hi: int, host: str, work: Path) -> dict[str, object]:
    res: dict[str, object] = {}
    for label, bpf in (("window", None), ("window+host", f"vlan and host {host}")):
        t = time.perf_counter()
        q = store.query(lo, hi, bpf)
        size = sum(len(c) for c in q.pcapng_chunks("bench"))
        res[f"agent_{label}"] = {"s": round(time.perf_counter() - t, 3), "bytes": size, "blocks_read": q.blocks_read,
                                 "blocks_skipped": q.skipped_blocks}  # fmt: skip
    fake_agent = types.SimpleNamespace(packet_store=store, agent_id="bench")
    ctl = ControlServer(fake_agent, "127.0.0.1", 0)  # type: ignore[arg-type]
    ctl.start()
    try:
        for label, bpf in (("window", None), ("window+host", f"vlan and host {host}")):
            out = work / f"cloudtap-{label}.pcapng"
            req = PcapRequest(from_ns=lo, to_ns=hi, targets=[Target(ctl.url)], bpf=bpf, max_bytes=4 << 30)
            t = time.perf_counter()
            packets, size = retrieve_to_file(req, out)
            res[f"http_{label}"] = {"s": round(time.perf_counter() - t, 3), "packets": packets, "bytes": size}
            out.unlink()
    finally:
        ctl.stop()
    return res


def editcap_run(peer: Path, lo: int, hi: int, work: Path) -> dict[str, object]:
    fmt = "%Y-%m-%dT%H:%M:%S.%fZ"
    a = datetime.fromtimestamp(lo / 1e9, UTC).strftime(fmt)
    b = datetime.fromtimestamp(hi / 1e9, UTC).strftime(fmt)
    out = work / "editcap.pcapng"
    t = time.perf_counter()
    subprocess.run(["editcap", "-A", a, "-B", b, str(peer), str(out)], check=True, capture_output=True)
    s = time.perf_counter() - t
    n = int(subprocess.run(["capinfos", "-c", "-M", str(out)], capture_output=True, text=True).stdout.split()[-1])
    res = {"s": round(s, 3), "packets": n, "bytes": out.stat().st_size}
    out.unlink()
    return res


def steno_run(peer: Path, lo: int, hi: int, host: str, t_first: int, multiplier: float, work: Path) -> dict[str, object]:
    """Replay into a veth captured by stenographer; query the mapped window with curl."""
    d = work / "steno"
    for sub in ("pkt", "idx"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    shutil.chown(d / "pkt", "stenographer", "stenographer")
    shutil.chown(d / "idx", "stenographer", "stenographer")
    cfg = {
        "Threads": [{"PacketsDirectory": str(d / "pkt"), "IndexDirectory": str(d / "idx"), "MaxDirectoryFiles": 30000,
                     "DiskFreePercentage": 1}],
        "StenotypePath": "/usr/sbin/stenotype", "Interface": "ctsteno1", "Port": 12346, "Host": "127.0.0.1",
        "Flags": ["--uid=root", "--gid=root"], "CertPath": str(CERTS),
    }  # fmt: skip
    (d / "config").write_text(json.dumps(cfg))
    subprocess.run(["ip", "link", "add", "ctsteno0", "type", "veth", "peer", "name", "ctsteno1"], check=True)
    proc = None
    try:
        for ifc in ("ctsteno0", "ctsteno1"):
            subprocess.run(["ip", "link", "set", ifc, "up", "mtu", "9000"], check=True)
        proc = subprocess.Popen(["stenographer", "-config", str(d / "config"), "-syslog=false"],
                                stdout=open(d / "log", "w"), stderr=subprocess.STDOUT)  # fmt: skip
        time.sleep(3)
        wall0 = time.time_ns()
        t = time.perf_counter()
        rep = subprocess.run(["tcpreplay", "-i", "ctsteno0", f"--multiplier={multiplier}", str(peer)],
                             capture_output=True, text=True)  # fmt: skip
        replay_s = time.perf_counter() - t
        time.sleep(75)  # stenotype closes (and indexes) its files once a minute
        a = wall0 + int((lo - t_first) / multiplier)
        b = wall0 + int((hi - t_first) / multiplier)
        fmt = "%Y-%m-%dT%H:%M:%SZ"
        out: dict[str, object] = {"replay_s": round(replay_s, 1), "multiplier": multiplier,
                                  "tcpreplay": rep.stdout.strip().splitlines()[-8:]}  # fmt: skip
        for label, extra in (("window", ""), ("window+host", f" and host {host}")):
            query = (f"after {datetime.fromtimestamp(a / 1e9, UTC).strftime(fmt)} and "
                     f"before {datetime.fromtimestamp(b / 1e9 + 1, UTC).strftime(fmt)}{extra}")  # fmt: skip
            dst = work / "steno.pcap"
            t = time.perf_counter()
            with dst.open("wb") as f:
                subprocess.run(["curl", "--silent", "--show-error", "--cert", str(CERTS / "client_cert.pem"), "--key",
                                str(CERTS / "client_key.pem"), "--cacert", str(CERTS / "ca_cert.pem"), "-d", query,
                                "https://127.0.0.1:12346/query"], stdout=f, check=True)  # fmt: skip
            s = time.perf_counter() - t
            n = int(subprocess.run(["capinfos", "-c", "-M", str(dst)], capture_output=True, text=True).stdout.split()[-1])
            out[label] = {"s": round(s, 3), "packets": n, "bytes": dst.stat().st_size, "query": query}
            dst.unlink()
        files = list((d / "pkt").iterdir())
        out["files"] = len(files)
        out["stored_bytes"] = sum(f.stat().st_size for f in files)
        return out
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(20)
        subprocess.run(["ip", "link", "del", "ctsteno0"], check=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--passes", type=int, default=21, help="5-minute passes (21 ~ 2 GB at snap length 256)")
    ap.add_argument("--no-steno", action="store_true")
    ap.add_argument("--steno-multiplier", type=float, default=21.0)
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="pcapbench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        store, peer, timing = build(work, args.passes)
        idx = store.index()
        first, last = int(idx["min_ts"].min()), int(idx["max_ts"].max())
        lo = first + (args.passes // 2) * PASS_NS + 60 * 10**9
        hi = lo + PASS_NS
        host = str(timing.pop("host"))
        result: dict[str, object] = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "cpus": os.cpu_count(),
            "store": {"disk_bytes": store.stats.disk_bytes, "packets": store.stats.stored_packets,
                      "blocks": len(idx), "span_min": round((last - first) / 60e9, 1), **timing,
                      "feed_mpps": round(store.stats.packets_written / timing["feed_s"] / 1e6, 2)},
            "peer_pcapng_bytes": peer.stat().st_size,
            "window": {"from_ns": lo, "to_ns": hi, "host": host},
            "cloudtap": cloudtap_runs(store, lo, hi, host, work),
            "editcap": editcap_run(peer, lo, hi, work),
        }  # fmt: skip
        print(json.dumps(result, indent=1))
        if not args.no_steno:
            try:
                result["stenographer"] = steno_run(peer, lo, hi, host, first, args.steno_multiplier, work)
            except (OSError, subprocess.CalledProcessError) as exc:
                result["stenographer"] = {"error": str(exc)}
        store.close()
        dest = REPO / "bench" / "results" / "pcap_retrieval.json"
        dest.write_text(json.dumps(result, indent=1) + "\n")
        print(json.dumps(result, indent=1))
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

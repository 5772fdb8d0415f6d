"""The troubleshooting workflow, step by step through the `cloudtap` CLI, with what each step found.

panorama (topology) → back to the incident window → compare with the window before (what burst?) →
which service got slower, on which server, which statements (request latency) → drill into the top edge's client (which peer, which port, one-way?) → pull the packets of the burst →
backtest the signature over all history (how often?) → conclusion.

Every step runs the real CLI against the server with ``--json`` and reads its answer; with a console
it also prints the command and the table a user would see.
"""

from __future__ import annotations

import importlib
import json
import shlex
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console

from cloudtap.demo.latency_step import LatencyFindings, latency_step
from cloudtap.demo.stack import CLI, Stack

#: The incident report the demo starts from: "around two hours in, things were slow".
INCIDENT_AFTER = timedelta(hours=2)


@dataclass
class Findings:
    """What the workflow found (each step's answer, reduced to the facts the conclusion needs)."""

    window: tuple[str, str] = ("", "")
    projects: int = 0
    topology_edges: int = 0
    top_project_edge: str = ""
    top_edge: dict[str, Any] = field(default_factory=dict)  #: compare's first edge
    top_edge_rank_of_db: int = -1
    bursts: list[dict[str, Any]] = field(default_factory=list)
    main_peer: dict[str, Any] = field(default_factory=dict)  #: drill-down: the subject's biggest peer
    push: dict[str, Any] | None = None  #: drill-down: the one-way push on the top edge
    pcap: Path | None = None
    pcap_packets: int = 0
    pcap_payload_c2s: int = 0
    pcap_payload_s2c: int = 0
    backtest: dict[str, Any] = field(default_factory=dict)
    latency: LatencyFindings = field(default_factory=LatencyFindings)  #: which service got slower, where
    conclusion: str = ""


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Walker:
    """Runs CLI steps against one server, printing them when given a console."""

    def __init__(self, stack: Stack, console: Console | None = None, timeout_s: float = 300.0) -> None:
        self.stack = stack
        self.console = console
        self.timeout_s = timeout_s

    def run(self, title: str, args: list[str], show: bool = True) -> Any:
        """Run ``cloudtap ARGS --server URL --json``; with a console, also show the table a user would see.

        The table is drawn from that one answer by the CLI's own renderer (one CLI process per step);
        a command without one is run a second time without ``--json``.
        """
        args = [*args, "--server", self.stack.url]
        shown = self.console is not None and show
        if shown:
            self.console.print(f"\n[bold]{title}[/]\n[dim]$ cloudtap {shlex.join(args)}[/]")  # type: ignore[union-attr]
        done = subprocess.run([*CLI, *args, "--json"], capture_output=True, text=True, timeout=self.timeout_s,
                              env=self.stack.cli_env)  # fmt: skip
        if done.returncode != 0:
            if shown:
                self.console.print(done.stderr.rstrip(), highlight=False, markup=False)  # type: ignore[union-attr]
            raise RuntimeError(
                f"`cloudtap {shlex.join(args)} --json` failed ({done.returncode}): {done.stderr.strip()}"
            )
        answer = json.loads(done.stdout)
        if shown:
            self._show(args, answer)
        return answer

    def _show(self, args: list[str], answer: Any) -> None:
        assert self.console is not None
        render = _renderer(args[0])
        if render is not None:
            try:
                render(answer, self.console)
                return
            except (KeyError, TypeError, ValueError):  # the renderer and the answer disagree: ask the CLI
                pass
        human = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=self.timeout_s,
                               env=self.stack.cli_env)  # fmt: skip
        self.console.print(human.stdout.rstrip() or human.stderr.rstrip(), highlight=False, markup=False)

    def say(self, text: str) -> None:
        """Print a step's finding."""
        if self.console is not None:
            self.console.print(f"[green]→[/] {text}", highlight=False)


def _renderer(command: str) -> Callable[[Any, Console], None] | None:
    """The CLI's function drawing ``cloudtap COMMAND``'s answer, when it has one."""
    name = f"show_{command}"
    for module in ("cloudtap.cli.analyse_view", "cloudtap.cli.analyse_cmd"):
        try:
            found = getattr(importlib.import_module(module), name, None)
        except ImportError:
            continue
        if callable(found):
            return found  # type: ignore[no-any-return]
    return None


def walk(stack: Stack, console: Console | None = None) -> Findings:
    """Walk the whole workflow on the running stack and return the findings."""
    w = Walker(stack, console)
    found = Findings()
    start = stack.scenario.start
    end = start + timedelta(seconds=stack.scenario.duration)
    everything = ["--from", _iso(start), "--to", _iso(end)]

    # 1. panorama: who talks to whom, by project
    topo = w.run("1. Panorama: who talks to whom, by project (whole capture)",
                 ["topology", *everything, "--level", "project", "--limit", "8"])  # fmt: skip
    found.projects = len(topo["nodes"])
    found.topology_edges = int(topo.get("edges_total", len(topo["edges"])))
    if topo["edges"]:
        e = topo["edges"][0]
        found.top_project_edge = (
            f"{e.get('source_name') or e['source']} → {e.get('target_name') or e['target']}"
        )
    w.say(
        f"{found.projects} projects, {found.topology_edges} project-to-project edges; biggest: {found.top_project_edge}"
    )

    # 2-3. back to the incident window, compared with the same span just before
    incident = start + INCIDENT_AFTER
    a_from, a_to = incident - timedelta(minutes=5), incident + timedelta(minutes=10)
    found.window = (_iso(a_from), _iso(a_to))
    cmp = w.run(f"2. Back to the incident ({found.window[0]} .. {found.window[1]}), compared with the 15 min before",
                ["compare", "--from", found.window[0], "--to", found.window[1], "--baseline", "before",
                 "--level", "ip", "--limit", "5"])  # fmt: skip
    if not cmp["edges"]:
        raise RuntimeError("compare found no edges in the incident window")
    top = cmp["edges"][0]
    found.top_edge = top
    found.bursts = list(top.get("bursts") or [])
    burst = found.bursts[0] if found.bursts else None
    w.say(
        f"biggest change: {top['source_name'] or top['source']} ({top['source']}) → "
        f"{top['target_name'] or top['target']} ({top['target']}):{top['server_port']} ({top['status']} edge), "
        f"+{top['abs_change'] / 2**20:,.0f} MiB"
        + (f", burst {burst['start']} .. {burst['end']}" if burst else "")
    )

    # 2b-2d. which service got slower meanwhile, on which server, which statements (application requests)
    found.latency = latency_step(w, found.window, top)

    # 4. drill into that client
    client, server, port = top["source"], top["target"], int(top["server_port"])
    drill = w.run(f"3. Drill-down: what does {client} do in that window?",
                  ["drill", "--from", found.window[0], "--to", found.window[1], "--ip", client, "--limit", "5"])  # fmt: skip
    peers = drill.get("by_peer") or drill.get("peers") or []
    found.main_peer = peers[0] if peers else {}
    pushes = [p for p in drill.get("one_way", [])
              if {p["from_ip"], p["to_ip"]} == {client, server} and int(p["server_port"]) == port]  # fmt: skip
    found.push = pushes[0] if pushes else None
    if found.push:
        p = found.push
        w.say(f"main peer {found.main_peer.get('key', '?')} ({found.main_peer.get('share', 0):.0%} of its bytes); "
              f"one-way push {p['client_name'] or p['client']} → {p['server_name'] or p['server']}:{p['server_port']}: "
              f"{p['bytes_forward'] / 2**20:,.1f} MiB forward, {p['bytes_back'] / 2**10:,.0f} KiB back (ratio {p['ratio']:,.0f})")  # fmt: skip

    # 5. the packets of the first minute of the burst
    p_from = datetime.fromisoformat(burst["start"].replace("Z", "+00:00")) if burst else incident
    p_to = p_from + timedelta(minutes=1)
    found.pcap = stack.out / "incident.pcapng"
    vm = top.get("source_name") or client  # the VM's name, as a user would type it
    args = ["pcap", "--vm", vm, "--from", _iso(p_from), "--to", _iso(p_to), "--filter",
            f"host {server} and port {port}", "-o", str(found.pcap), "--quiet"]  # fmt: skip
    if console is not None:
        console.print(
            f"\n[bold]4. The packets of the burst's first minute[/]\n[dim]$ cloudtap {shlex.join([*args, '--server', stack.url])}[/]"
        )
    done = subprocess.run([*CLI, *args, "--server", stack.url], capture_output=True, text=True, timeout=300,
                          env=stack.cli_env)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(
            f"cloudtap pcap failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}"
        )
    found.pcap_packets, found.pcap_payload_c2s, found.pcap_payload_s2c = _payload_split(found.pcap, port)
    w.say(f"{found.pcap}: {found.pcap_packets:,} packets; payload {found.pcap_payload_c2s / 2**20:,.1f} MiB "
          f"client → server, {found.pcap_payload_s2c / 2**10:,.1f} KiB back")  # fmt: skip

    # 6. backtest the signature over all stored history
    per_minute = (burst["peak"] if burst else top["value"]) / 4
    bt = w.run("5. Backtest: how often does this happen?",
               ["backtest", "--ip", client, "--peer", server, "--port", str(port), "--when",
                f"bytes>{int(per_minute)}", "--step", "1m", "--save", "bulk-push"])  # fmt: skip
    found.backtest = bt
    period = bt.get("period") or {}
    w.say(
        f"{bt.get('count', len(bt.get('occurrences', [])))} occurrences; {period.get('text', 'no period')}"
        + (f"; next expected {period['next_expected']}" if period.get("next_expected") else "")
    )

    found.conclusion = (
        f"the burst in the incident window is {top['source_name'] or client} ({client}) pushing about "
        f"{(found.push or {}).get('bytes_forward', top['value']) / 2**20:,.0f} MiB one way to "
        f"{top['target_name'] or server} ({server}:{port}), and it happens {period.get('text', 'repeatedly')}: "
        f"a scheduled bulk transfer (a backup, by its peer, port and one-way shape). "
        + (
            f"Meanwhile {found.latency.sentence}: move the push off-peak or rate-limit it."
            if found.latency.available
            else "Check whether it shares a path with the slow service; move it off-peak or rate-limit it."
        )
    )
    return found


def _payload_split(pcap: Path, port: int) -> tuple[int, int, int]:
    """Packets in ``pcap`` and the L4 payload bytes each way of the connections to ``port``."""
    from cloudtap.meter.pipeline import meter_file

    flows = meter_file(pcap).flows
    to_port = flows[flows["server_port"] == port]
    packets = int(flows["packets_c2s"].sum() + flows["packets_s2c"].sum())
    return packets, int(to_port["payload_bytes_c2s"].sum()), int(to_port["payload_bytes_s2c"].sum())

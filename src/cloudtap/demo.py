"""`make demo`: a small private cloud with an hourly backup incident, end to end on embedded defaults.

Run as ``python -m cloudtap.demo [--out DIR] [--keep-running]``:

1. ``cloudtap synth small-cloud``: 3 projects, 4 hypervisors, 30 VMs, 3 hours, and a database VM that
   pushes a backup to one peer at the top of every hour;
2. ``cloudtap server run`` on an embedded chDB store;
3. ``cloudtap agent run --replay`` ships flows and 1 s / 1 min edges to the server;
4. the queries that find the burst, run with the real CLI, and the URL to explore further.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from rich.panel import Panel
from rich.progress import BarColumn, Progress, TextColumn

from cloudtap.cli.render import make_console
from cloudtap.synth import builtin_scenario, write_pcap

CLI = [sys.executable, "-m", "cloudtap.cli.main"]


def _wait_file(path: Path, proc: subprocess.Popen[str], timeout_s: float = 120.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited early:\n{proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.1)
    raise RuntimeError("the server did not start in time")


def _get_json(url: str) -> dict:  # type: ignore[type-arg]
    import json
    import urllib.request

    with urllib.request.urlopen(url, timeout=30) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("out/demo"), help="where the pcap and the store go")
    parser.add_argument("--scenario", default="small-cloud", help="built-in scenario name")
    parser.add_argument("--port", type=int, default=8470, help="server port (0 = any free port)")
    parser.add_argument("--keep-running", action="store_true", help="keep the server up after the demo")
    args = parser.parse_args(argv)
    console = make_console()
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    console.print(Panel.fit("[bold]cloudtap demo[/]: a small private cloud; something bursts every hour. What is it?"))

    pcap = out / f"{args.scenario}.pcap"
    with Progress(TextColumn("1/4 synthesising the cloud's traffic"), BarColumn(), console=console, transient=True) as bar:
        task = bar.add_task("synth", total=1)
        synth = write_pcap(builtin_scenario(args.scenario), pcap, progress=lambda d, t: bar.update(task, completed=d, total=t))
    console.print(f"1/4 [green]✓[/] {pcap}: {synth.packets:,} packets, {synth.flows:,} connections, 3 h of a 30-VM cloud")

    data = out / "chdb"
    shutil.rmtree(data, ignore_errors=True)
    status = out / "server.url"
    status.unlink(missing_ok=True)
    env = {**os.environ, "CLOUDTAP_SERVER__API__STATUS_FILE": str(status)}
    server = subprocess.Popen(
        [*CLI, "server", "run", "--data", str(data), "--port", str(args.port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        url = _wait_file(status, server)
        console.print(f"2/4 [green]✓[/] server on {url} (API docs {url}/docs), embedded chDB at {data}")

        agent_env = {
            **os.environ,
            "CLOUDTAP_AGENT__AGENT_ID": "hv-demo",
            "CLOUDTAP_AGENT__OUTPUT__SINK": "server",
            "CLOUDTAP_AGENT__OUTPUT__SERVER_URL": url,
            "CLOUDTAP_AGENT__OUTPUT__SPOOL_DIRECTORY": str(out / "spool"),
            "CLOUDTAP_AGENT__LIMITS__USE_CGROUP": "false",
        }
        shutil.rmtree(out / "spool", ignore_errors=True)
        started = time.monotonic()
        agent = subprocess.run(
            [*CLI, "agent", "run", "--replay", str(pcap), "--port", "0"],
            env=agent_env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        if agent.returncode != 0:
            console.print(f"[red]agent failed:[/]\n{agent.stderr}")
            return 1
        summary = agent.stderr.strip().splitlines()[-1] if agent.stderr.strip() else ""
        console.print(f"3/4 [green]✓[/] agent replayed the capture in {time.monotonic() - started:.1f} s: {summary}")

        top = _get_json(f"{url}/api/v1/query/top?by=bytes&group=client_ip,server_ip,server_port&since=all&limit=1")
        client, server_ip, port, total = top["rows"][0][:4]
        steps = [
            ("Who talks to whom the most (3 hours)?",
             ["query", "top", "--by", "bytes", "--group", "client_ip,server_ip,server_port", "--since", "all",
              "--limit", "5", "--server", url]),
            ("That edge, bytes per 10 minutes: the burst at the top of every hour",
             ["query", "series", "--metric", "bytes", "--step", "10m", "--since", "all",
              "--filter", f"server_ip={server_ip}", "--filter", f"server_port={port}", "--server", url]),
        ]  # fmt: skip
        console.print("4/4 the queries that find it:")
        for title, cmd in steps:
            console.print(f"\n[bold]{title}[/]\n[dim]$ cloudtap {' '.join(cmd)}[/]")
            done = subprocess.run([*CLI, *cmd], capture_output=True, text=True, timeout=120)
            console.print(done.stdout.rstrip() or done.stderr.rstrip())
        console.print(
            Panel.fit(
                f"Finding: {client} sends the most bytes of the cloud ({total / 2**20:,.0f} MiB in 3 h) to one peer, "
                f"{server_ip}:{port}, in bursts at the top of every hour (series above): a scheduled bulk push.\n"
                f"Explore: {url}/docs · `cloudtap query flows --since all --filter server_port={port} --server {url}`"
            )
        )
        if args.keep_running:
            console.print(f"server still running on {url}; Ctrl-C to stop")
            server.wait()
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

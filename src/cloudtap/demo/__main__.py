"""``python -m cloudtap.demo``: run the stack, walk the workflow, print each step's finding."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from datetime import timedelta
from pathlib import Path

from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from cloudtap.cli.render import make_console
from cloudtap.demo.stack import Stack, demo_stack
from cloudtap.demo.workflow import walk


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m cloudtap.demo", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("out/demo"), help="working directory")
    parser.add_argument("--scenario", default="seed-case", help="built-in scenario (seed-case, small-cloud)")
    parser.add_argument("--port", type=int, default=8470, help="server port (0 = any free port)")
    keep = parser.add_mutually_exclusive_group()
    keep.add_argument("--keep-running", action="store_true", default=None,
                      help="keep server and agent up after the walk (default when run from a terminal)")  # fmt: skip
    keep.add_argument("--no-keep-running", dest="keep_running", action="store_false", help="end after the walk")
    args = parser.parse_args(argv)
    # SIGTERM ends the demo like Ctrl-C: the server and agent processes are stopped, not orphaned
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.keep_running is None:
        args.keep_running = sys.stdin.isatty() and sys.stdout.isatty()
    console = make_console()
    console.print(Panel.fit(
        "[bold]cloudtap demo[/]: a private cloud of many VMs; users say it was slow about two hours in. Why?"
    ))  # fmt: skip
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        tasks: dict[str, int] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                label = {"synth": "synthesising the cloud's traffic", "replay": "agent replaying + shipping"}
                tasks[stage] = bar.add_task(label.get(stage, stage), total=total)
            bar.update(tasks[stage], completed=done, total=total)

        started = time.monotonic()
        stack_cm = demo_stack(args.out, args.scenario, args.port, progress)
        stack = stack_cm.__enter__()
    try:
        console.print(
            f"[green]✓[/] {stack.pcap.name}: {stack.packets:,} packets of {stack.flows:,} connections; "
            f"server {stack.url} (API docs {stack.url}/docs), agent {stack.agent_url}; "
            f"replayed, metered, shipped and stored in {time.monotonic() - started:.0f} s"
        )
        console.print(
            f"[green]✓[/] TLS with a private CA ({stack.ca_file}); every route needs a login: user [bold]admin[/], "
            f"password in {stack.out / 'admin-password'}; the CLI steps below ran `cloudtap login` first"
        )
        found = walk(stack, console)
        console.print(Panel.fit(f"[bold]Conclusion[/]: {found.conclusion}"))
        console.print(Panel.fit(
            f"[bold]Web console[/]: {console_link(stack)}\n"
            f"log in as [bold]admin[/] with password [bold]{stack.admin_password}[/] "
            f"(the browser will not know the demo's private CA: {stack.ca_file})"
        ))  # fmt: skip
        if args.keep_running:
            console.print(f"server {stack.url} and agent {stack.agent_url} stay up; Ctrl-C to stop")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
    finally:
        stack_cm.__exit__(None, None, None)
    return 0


def console_link(stack: Stack) -> str:
    """The console's panorama over the whole scenario (the range is in the link)."""
    start = stack.scenario.start
    end = start + timedelta(seconds=stack.scenario.duration)
    return f"{stack.url}/#/panorama?from={start:%Y-%m-%dT%H:%M:%SZ}&to={end:%Y-%m-%dT%H:%M:%SZ}"


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

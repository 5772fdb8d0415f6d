"""`cloudtap meter` loads its cached kernels without numba's compiler registries or libpcap.

What start-up no longer does is checked by what a fresh process has imported after metering a
capture in each output format (no timing: the bench measures time, bench/meter/whole_process.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ONE_TCP = "PcapPlusPlus/Tests/Pcap++Test/PcapExamples/one_tcp_stream.pcap"
ENV = {**os.environ, "NUMBA_CACHE_DIR": os.environ.get("NUMBA_CACHE_DIR", str(Path.cwd() / ".numba-cache"))}
#: Loaded by numba only to compile (typing and lowering registries, array implementation), and
#: libpcap's BPF compiler, needed only with --filter.
NOT_NEEDED = (
    "numba.np.linalg", "numba.np.arrayobj", "numba.typed.typeddict", "cloudtap.capture.bpf", "cloudtap.capture.libpcap",
)  # fmt: skip
#: Text outputs are written by numba kernels: Arrow is loaded only for parquet (~20 ms of start-up).
ARROW = ("pyarrow",)


def imported_after(args: list[str], watched: tuple[str, ...] = NOT_NEEDED) -> list[str]:
    script = textwrap.dedent(
        f"""
        import sys
        from typer.testing import CliRunner
        from cloudtap.cli.main import meter_app
        result = CliRunner().invoke(meter_app(), {args!r})
        assert result.exit_code == 0, result.output
        print(sorted(m for m in sys.modules if m.startswith({watched!r})))
        """
    )
    for _ in range(2):  # the first run may compile into an empty cache (compiling loads everything)
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, env=ENV, timeout=600
        )
        assert done.returncode == 0, done.stderr
    return eval(done.stdout)  # type: ignore[no-any-return]  # a list literal printed above


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet", "table"])
def test_cached_kernels_load_without_the_compiler(shared_pcaps: Path, tmp_path: Path, fmt: str) -> None:
    args = ["meter", str(shared_pcaps / ONE_TCP), "-f", fmt, "-o", str(tmp_path / f"out.{fmt}")]
    assert imported_after(args) == []
    assert (tmp_path / f"out.{fmt}").stat().st_size > 0


def test_a_filter_still_loads_libpcap(shared_pcaps: Path, tmp_path: Path) -> None:
    args = ["meter", str(shared_pcaps / ONE_TCP), "-f", "jsonl", "--filter", "tcp", "-o", str(tmp_path / "f")]
    assert "cloudtap.capture.bpf" in imported_after(args)
    assert (tmp_path / "f").read_text().count("\n") == 1


@pytest.mark.parametrize(
    "fmt, loads_arrow", [("jsonl", False), ("csv", False), ("table", False), ("parquet", True)]
)
def test_only_parquet_output_loads_arrow(
    shared_pcaps: Path, tmp_path: Path, fmt: str, loads_arrow: bool
) -> None:
    args = ["meter", str(shared_pcaps / ONE_TCP), "-f", fmt, "-o", str(tmp_path / f"out.{fmt}")]
    assert bool(imported_after(args, ARROW)) is loads_arrow
    assert (tmp_path / f"out.{fmt}").stat().st_size > 0

"""`cloudtap meter` as a process: only what metering needs is imported, output and exit codes intact."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ONE_TCP = "PcapPlusPlus/Tests/Pcap++Test/PcapExamples/one_tcp_stream.pcap"
SCRIPT = Path(sys.executable).parent / "cloudtap"
ENV = {**os.environ, "NUMBA_CACHE_DIR": os.environ.get("NUMBA_CACHE_DIR", str(Path.cwd() / ".numba-cache"))}


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet", "table"])
def test_meter_path_imports_no_other_command(shared_pcaps: Path, tmp_path: Path, fmt: str) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        from typer.testing import CliRunner
        from cloudtap.cli.main import meter_app
        args = ["meter", {str(shared_pcaps / ONE_TCP)!r}, "-f", {fmt!r}, "-o", {str(tmp_path / "out")!r}]
        assert CliRunner().invoke(meter_app(), args).exit_code == 0
        heavy = ("pandas", "cloudtap.server", "cloudtap.agent", "cloudtap.cli.query_cmd", "pyarrow.compute")
        print(sorted(m for m in sys.modules if m.startswith(heavy)))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=ENV, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.skipif(not SCRIPT.is_file(), reason="console script not installed")
def test_console_script_writes_the_same_records(shared_pcaps: Path, tmp_path: Path) -> None:
    pcap = str(shared_pcaps / ONE_TCP)
    done = subprocess.run([SCRIPT, "meter", pcap, "-f", "jsonl"], capture_output=True, text=True, env=ENV)
    assert done.returncode == 0, done.stderr
    assert "36 packets" in done.stderr
    subprocess.run([SCRIPT, "meter", pcap, "-f", "jsonl", "-o", tmp_path / "f.jsonl"], env=ENV, check=True)
    assert (tmp_path / "f.jsonl").read_text() == done.stdout
    table = subprocess.run([SCRIPT, "meter", pcap], capture_output=True, text=True, env=ENV)
    assert table.returncode == 0 and "81.218.72.15:80" in table.stdout


@pytest.mark.skipif(not SCRIPT.is_file(), reason="console script not installed")
def test_console_script_exit_codes(shared_pcaps: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.pcap"
    cut.write_bytes((shared_pcaps / ONE_TCP).read_bytes()[:5000])
    partial = subprocess.run([SCRIPT, "meter", cut, "-f", "jsonl"], capture_output=True, text=True, env=ENV)
    assert partial.returncode == 3 and "partial" in partial.stderr
    bad = subprocess.run([SCRIPT, "meter", cut, "-f", "xml"], capture_output=True, text=True, env=ENV)
    assert bad.returncode == 2 and "unknown --format" in bad.stderr
    usage = subprocess.run([SCRIPT, "meter", "--help"], capture_output=True, text=True, env=ENV)
    assert usage.returncode == 0 and "cloudtap meter" in usage.stdout

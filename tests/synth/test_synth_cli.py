"""``cloudtap synth`` as a Typer command: outputs, overrides, and errors with exit codes."""

from __future__ import annotations

from pathlib import Path

import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import typer
from typer.testing import CliRunner

from cloudtap.synth.cli import synth_command
from cloudtap.synth.writer import PCAP_MAGIC_US, inventory_path

app = typer.Typer()
app.command("synth")(synth_command)


@app.command("noop")
def _noop() -> None:  # a second command keeps "synth" a named sub-command, as in the real app
    """Nothing."""


runner = CliRunner()


def test_synth_writes_pcap_inventory_and_truth(tmp_path: Path) -> None:
    out = tmp_path / "x.pcap"
    truth = tmp_path / "x.parquet"
    res = runner.invoke(
        app,
        [
            "synth",
            "small-cloud",
            "-o",
            str(out),
            "--duration",
            "15s",
            "--precision",
            "us",
            "--truth",
            str(truth),
        ],
    )
    assert res.exit_code == 0, res.output
    assert int.from_bytes(out.read_bytes()[:4], "little") == PCAP_MAGIC_US
    assert inventory_path(out).is_file()
    table = pq.read_table(truth)
    assert table.num_rows > 50 and "close_type" in table.column_names
    assert "frames" in res.output and str(out) in res.output


def test_synth_from_yaml_path_with_csv_truth(tmp_path: Path) -> None:
    scn = tmp_path / "s.yaml"
    scn.write_text(
        "duration: 5s\ncloud: {hosts: 1, projects: [{name: p, vms: [{role: a}, {role: b}]}]}\n"
        "services: [{name: t, clients: p/a, servers: p/b, port: 80, rate: 5}]\n"
    )
    out = tmp_path / "y.pcap"
    res = runner.invoke(app, ["synth", str(scn), "-o", str(out), "--truth", str(tmp_path / "t.csv"), "-q"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "t.csv").read_text().startswith('"proto","client_ip"')
    assert out.stat().st_size > 24


def test_synth_errors_exit_2_with_a_message(tmp_path: Path) -> None:
    res = runner.invoke(app, ["synth", "no-such-scenario", "-o", str(tmp_path / "z.pcap")])
    assert res.exit_code == 2 and "no such scenario file" in res.output
    res = runner.invoke(app, ["synth", "small-cloud", "-o", str(tmp_path / "z.pcap"), "--encap", "mpls"])
    assert res.exit_code == 2 and "encapsulation" in res.output
    res = runner.invoke(app, ["synth", "small-cloud", "-o", str(tmp_path / "z.pcap"), "--truth", "t.json"])
    assert res.exit_code == 2 and ".parquet or .csv" in res.output
    assert not (tmp_path / "z.pcap").exists()


def test_synth_writes_the_request_truth(tmp_path: Path) -> None:
    scn = tmp_path / "s.yaml"
    scn.write_text(
        "name: r\nduration: 20s\ncloud: {hosts: 1, projects: [{name: p, vms: [{role: app, count: 2}, {role: db}]}]}\n"
        "services: [{name: sql, app: pgsql, clients: p/app, servers: p/db, port: 5432, rate: 2}]\n"
    )
    out, reqs = tmp_path / "r.pcap", tmp_path / "r.csv"
    res = runner.invoke(app, ["synth", str(scn), "-o", str(out), "--requests", str(reqs), "-q"])
    assert res.exit_code == 0, res.output
    table = pa_csv.read_csv(reqs)
    assert table.num_rows > 10
    assert set(table["l7_proto"].to_pylist()) == {"pgsql"}
    assert set(table["service"].to_pylist()) == {"sql"}

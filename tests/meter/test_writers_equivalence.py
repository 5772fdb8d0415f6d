"""The bulk writers produce exactly what the per-record writers did, on real captures.

The reference writers below are the ones ``cloudtap meter`` used before the bulk writers:
``json.dumps`` per row of ``flows_to_arrow``, Arrow's CSV writer over that table, and
``render.top_flows_table`` for the table output.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pytest
from rich.console import Console
from rich.table import Table
from rich.text import Text

from cloudtap.cli.output import top_flows_rich
from cloudtap.cli.render import human_bytes
from cloudtap.errors import CloudtapError
from cloudtap.meter import meter_file
from cloudtap.meter.records import flows_to_arrow
from cloudtap.meter.writers.arrow import flows_table
from cloudtap.meter.writers.jsonl import write_jsonl
from cloudtap.meter.writers.top import top_flows
from cloudtap.schema.flow import FLOW_DTYPE

CAPTURES = (
    "PcapPlusPlus/Tests/Pcap++Test/PcapExamples/example.pcap",
    "zeek/testing/btest/Traces/tunnels/gre-aruba.pcap",
    "deepflow/agent/resources/test/common/decapsulate_erspan1.pcap",
    "arkime/tests/pcap/arkime_synthetic.pcap",
    "suricata-verify/tests/vxlan-decoder-03/vxlan.pcap",
    "PcapPlusPlus/Tests/Pcap++Test/PcapExamples/pcapng-example.pcapng",
    "zeek/testing/btest/Traces/tunnels/gtp/gtp1_gn_normal_incl_fragmentation.pcap",
    "deepflow/agent/resources/test/flow_generator/tcp-one-syn.pcap",
)



#: The table output as it was built before the bulk writers (Arrow group-by + join): the oracle.
_PROTO = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmp6", 132: "sctp", 47: "gre"}


def top_flows_table(flows: pa.Table, limit: int = 20, title: str = "Top flows by bytes") -> Table:
    """The ``limit`` biggest flows (records summed per flow_id) as a Rich table."""
    if flows.num_rows:
        summed = flows.group_by(["flow_id"], use_threads=False).aggregate(
            [("bytes_c2s", "sum"), ("bytes_s2c", "sum"), ("packets_c2s", "sum"), ("packets_s2c", "sum"),
             ("retrans_c2s", "sum"), ("retrans_s2c", "sum")]
        )  # fmt: skip
        last = flows.group_by(["flow_id"], use_threads=False).aggregate([("record_seq", "max")])
        keys = flows.join(
            last, keys=["flow_id", "record_seq"], right_keys=["flow_id", "record_seq_max"], join_type="inner"
        )
        keys = keys.select(["flow_id", "proto", "client_ip", "client_port", "server_ip", "server_port",
                            "rtt_client_us", "rtt_server_us", "close_type"])  # fmt: skip
        summed = summed.join(keys, keys="flow_id", join_type="inner")
        total = pc.add(summed["bytes_c2s_sum"], summed["bytes_s2c_sum"])
        summed = summed.append_column("total", total).sort_by([("total", "descending")]).slice(0, limit)
    else:
        summed = None
    table = Table(title=title, header_style="bold cyan", row_styles=["", "dim"])
    for name, justify in (("proto", "left"), ("client", "left"), ("server", "left"), ("packets c→s/s→c", "right"),
                          ("bytes c→s", "right"), ("bytes s→c", "right"), ("rtt µs", "right"),
                          ("retrans", "right"), ("close", "left")):  # fmt: skip
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    if summed is None:
        return table
    for row in summed.to_pylist():
        rtt = (
            row["rtt_client_us"] + row["rtt_server_us"]
            if row["rtt_client_us"] >= 0 <= row["rtt_server_us"]
            else None
        )
        retrans = row["retrans_c2s_sum"] + row["retrans_s2c_sum"]
        table.add_row(
            _PROTO.get(row["proto"], str(row["proto"])),
            f"{row['client_ip']}:{row['client_port']}",
            f"{row['server_ip']}:{row['server_port']}",
            f"{row['packets_c2s_sum']}/{row['packets_s2c_sum']}",
            human_bytes(row["bytes_c2s_sum"]),
            human_bytes(row["bytes_s2c_sum"]),
            f"{rtt:.0f}" if rtt is not None else "-",
            Text(str(retrans), style="bold red" if retrans else ""),
            Text(row["close_type"], style="yellow" if row["close_type"] not in ("fin", "forced_end") else ""),
        )
    return table

def reference_jsonl(table: pa.Table) -> bytes:
    """The per-record JSON lines writer the bulk writer replaces."""
    out = io.StringIO()
    names = table.column_names
    for row in zip(*(c.to_pylist() for c in table.columns), strict=True):
        out.write(json.dumps(dict(zip(names, row, strict=True)), separators=(",", ":")) + "\n")
    return out.getvalue().encode()


def bulk_jsonl(flows: np.ndarray) -> bytes:
    buf = io.BytesIO()
    write_jsonl(flows, buf)
    return buf.getvalue()


def csv_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pacsv.write_csv(table, buf)
    return buf.getvalue()


def rendered(renderable: object) -> list[str]:
    console = Console(file=io.StringIO(), width=160, color_system=None)
    console.print(renderable)
    return console.file.getvalue().splitlines()  # type: ignore[attr-defined]


def metered(path: Path) -> np.ndarray:
    try:
        return meter_file(path).flows
    except CloudtapError:
        return np.zeros(0, FLOW_DTYPE)


def assert_equivalent(flows: np.ndarray) -> None:
    reference = flows_to_arrow(flows)
    table = flows_table(flows)
    assert table.schema.equals(reference.schema)
    assert table.equals(reference)
    assert bulk_jsonl(flows) == reference_jsonl(reference)
    assert csv_bytes(table) == csv_bytes(reference)


@pytest.mark.parametrize("name", CAPTURES)
def test_writers_match_the_reference_on_a_capture(shared_pcaps: Path, name: str) -> None:
    flows = metered(shared_pcaps / name)
    assert len(flows)
    assert_equivalent(flows)
    old, new = (
        rendered(top_flows_table(flows_to_arrow(flows), limit=5)),
        rendered(top_flows_rich(top_flows(flows, 5))),
    )
    assert old[:4] == new[:4]  # title and header
    # Flows with equal byte totals may be listed in either order; the rows are the same.
    assert sorted(rendered(top_flows_table(flows_to_arrow(flows), limit=1000))) == sorted(
        rendered(top_flows_rich(top_flows(flows, 1000)))
    )


def test_writers_match_the_reference_on_every_manifest_capture(shared_pcaps: Path) -> None:
    with (shared_pcaps / "MANIFEST.csv").open() as fh:
        paths = [shared_pcaps / row["path"] for row in csv.DictReader(fh)]
    flows = np.concatenate([metered(p) for p in paths if p.is_file()])
    assert len(flows) > 1000
    assert_equivalent(flows)


def test_no_records_write_nothing() -> None:
    empty = np.zeros(0, FLOW_DTYPE)
    assert bulk_jsonl(empty) == b""
    assert flows_table(empty).equals(flows_to_arrow(empty))
    assert top_flows(empty) == []

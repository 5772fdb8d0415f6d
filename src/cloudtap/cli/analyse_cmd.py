"""`cloudtap topology | compare | bursts | drill | backtest | signature`: the troubleshooting workflow.

Every command answers through the server API (``--server URL``, ``--token``, ``--ca``: see
:mod:`cloudtap.cli.server_options`) or reads an embedded data directory directly (``--data DIR``);
``--json`` prints the API's answer. Exit codes: 0 ok, 2 bad input (the field is named), 1 server or
store unreachable, or not logged in.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from cloudtap.cli.errors import CliError
from cloudtap.cli.query_cmd import open_local_store
from cloudtap.cli.render import human_bytes, make_console
from cloudtap.cli.server_client import UNREACHABLE_HINT
from cloudtap.cli.server_options import CaOpt, Remote, ServerOpt, TokenOpt

# --- options shared by the commands -------------------------------------------------------------------

DataOpt = Annotated[Path | None, typer.Option("--data", help="embedded chDB data directory, read directly")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print the API's JSON answer")]
SinceOpt = Annotated[str, typer.Option("--since", help="window ending now: 15m, 1h, 2d")]
FromOpt = Annotated[
    str | None, typer.Option("--from", help="window start (ISO 8601, epoch, -1h); wins over --since")
]
ToOpt = Annotated[str | None, typer.Option("--to", help="window end (default now)")]
VmOpt = Annotated[str | None, typer.Option("--vm", help="VM name, id:<n> or id (either side)")]
IpOpt = Annotated[str | None, typer.Option("--ip", help="IP or CIDR (either side)")]
PeerOpt = Annotated[str | None, typer.Option("--peer", help="IP or CIDR on the other side of --vm/--ip")]
PortOpt = Annotated[int | None, typer.Option("--port", help="server port")]
ProtoOpt = Annotated[str | None, typer.Option("--proto", help="tcp, udp, icmp... or a number")]
ProjectOpt = Annotated[str | None, typer.Option("--project", help="project name or id (either side)")]
LevelOpt = Annotated[str, typer.Option("--level", help="ip | subnet | vm | host | project")]
LimitOpt = Annotated[int, typer.Option("--limit", "-n", min=1, help="rows shown")]

_SIG_HELP = "Saved signatures: save, list, show, delete, run."
signature_app = typer.Typer(help=_SIG_HELP, no_args_is_help=True)


def add_analysis_commands(app: typer.Typer) -> None:
    """Register the analysis commands on the top-level ``cloudtap`` app."""
    app.command("topology")(topology_command)
    app.command("compare")(compare_command)
    app.command("bursts")(bursts_command)
    app.command("drill")(drill_command)
    app.command("backtest")(backtest_command)
    app.add_typer(signature_app, name="signature")


# --- running an analysis ---------------------------------------------------------------------------------


def _window(since: str, time_from: str | None, time_to: str | None) -> dict[str, Any]:
    start = (
        time_from
        if time_from is not None
        else (since if since.startswith("-") or since == "all" else f"-{since}")
    )
    return {"time_from": start, "time_to": time_to}


def _filter(**kwargs: Any) -> dict[str, Any]:
    return {k: v for k, v in kwargs.items() if v is not None}


def _http(remote: Remote, method: str, path: str, body: dict[str, Any] | None = None,
          timeout_s: float = 120.0) -> Any:  # fmt: skip
    client = remote.client(timeout_s, hint=f"{UNREACHABLE_HINT} or use --data DIR")
    return client.call_json(method, path, body)


def _local(data: Path, call: Callable[[Any], Any]) -> Any:
    from cloudtap.server.query.errors import QueryError

    store = open_local_store(data)
    try:
        result = call(store)
    except QueryError as exc:
        raise CliError(str(exc), 2) from exc
    finally:
        store.close()
    return result.model_dump(mode="json") if isinstance(result, BaseModel) else result


def _run(remote: Remote, data: Path | None, method: str, path: str, body: dict[str, Any] | None,
         local: Callable[[Any], Any]) -> Any:  # fmt: skip
    """The answer (JSON-like) from ``--data`` (``local(store)``) or the server."""
    if remote.server is not None and data is not None:
        raise CliError("give --server URL or --data DIR, not both", 2)
    if data is not None:
        return _local(data, local)
    return _http(remote, method, path, body)


def _main(work: Callable[[], Any], as_json: bool, show: Callable[[Any, Console], None]) -> None:
    err = Console(stderr=True, soft_wrap=True)
    try:
        answer = work()
    except CliError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(exc.code) from exc
    except ValueError as exc:  # pydantic validation of a locally built request
        err.print(f"[bold red]error:[/] {str(exc).strip()}", highlight=False)
        raise typer.Exit(2) from exc
    if as_json:
        sys.stdout.write(json.dumps(answer, separators=(",", ":")) + "\n")
    else:
        show(answer, make_console())


def _validated(model: type[BaseModel], body: dict[str, Any]) -> BaseModel:
    from pydantic import ValidationError

    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise CliError(f"{where}: {first['msg']}", 2) from None


# --- rendering ----------------------------------------------------------------------------------------------


def _b(v: float | None) -> str:
    return "-" if v is None else human_bytes(float(v))


def _num(v: float | None, digits: int = 1) -> str:
    if v is None:
        return "-"
    return f"{v:,.{digits}f}" if isinstance(v, float) and not float(v).is_integer() else f"{int(v):,}"


def _table(title: str, columns: list[str], rows: list[list[str]], caption: str | None = None) -> Table:
    t = Table(title=title, caption=caption, header_style="bold cyan", row_styles=["", "dim"])
    for i, c in enumerate(columns):
        t.add_column(c, justify="left" if i < 2 else "right")
    for r in rows:
        t.add_row(*r)
    return t


def _span(w: dict[str, str] | None) -> str:
    if not w:
        return "-"
    return (
        f"{w['from'].replace('T', ' ').removesuffix('Z')} → {w['to'].replace('T', ' ').removesuffix('Z')} UTC"
    )


def show_topology(a: dict[str, Any], console: Console) -> None:
    """Edges of a topology as a table."""
    rows = [[e["source_name"], e["target_name"],
             f"{e['server_port']}/{e['proto']}" if e.get("server_port") is not None else ",".join(map(str, e["ports"][:4])),
             _b(e["bytes"]), _b(e["bytes_c2s"]), _b(e["bytes_s2c"]), _num(e["flows"]), _num(e["failed"]),
             _num(e["retrans"]), _num(e["rtt_mean_us"], 0)] for e in a["edges"]]  # fmt: skip
    cap = (f"{_span(a['window'])} · {a['stored_table']} · {len(a['nodes'])} nodes · "
           f"{len(a['edges'])} of {a['edges_total']} edges · {a['elapsed_ms']:.0f} ms")  # fmt: skip
    console.print(_table(f"topology ({a['level']})", ["client", "server", "ports", "bytes", "c→s", "s→c", "flows",
                                                       "failed", "retrans", "rtt µs"], rows, cap))  # fmt: skip


def _change_rows(changes: list[dict[str, Any]], edge: bool) -> list[list[str]]:
    rows = []
    for c in changes:
        bursts = c.get("bursts") or []
        burst = ", ".join(f"{b['start'][11:16]}–{b['end'][11:16]}" for b in bursts[:3]) + (
            " …" if len(bursts) > 3 else ""
        )
        who = [c["source_name"], c["target_name"] or ""] if edge else [c["source_name"], ""]
        port = f"{c['server_port']}/{c['proto']}" if c.get("server_port") is not None else ""
        rel = "new" if c["status"] == "new" else "gone" if c["status"] == "vanished" else (
            f"{c['rel_change'] * 100:+.0f}%" if c["rel_change"] is not None else "-")  # fmt: skip
        rows.append([*who, port, _b(c["value"]), _b(c["expected"]), _b(c["abs_change"]) if c["abs_change"] >= 0
                     else "-" + _b(-c["abs_change"]), rel, _num(c["z"], 1), burst or "-"])  # fmt: skip
    return rows


def show_compare(a: dict[str, Any], console: Console) -> None:
    """Ranked edges and endpoints, new and vanished edges."""
    head = ["client", "server", "port", a["metric"], "expected", "change", "rel", "z", "bursts"]
    cap = (f"A {_span(a['window'])} vs baseline {_span(a['baseline'])} · {a['stored_table']} · step {a['step_s']} s · "
           f"{a['counts']['new_edges']} new, {a['counts']['vanished_edges']} vanished of {a['counts']['edges']} edges · "
           f"{a['elapsed_ms']:.0f} ms")  # fmt: skip
    console.print(
        _table(f"edges that changed most (by {a['rank_by']})", head, _change_rows(a["edges"], True), cap)
    )
    console.print(_table("endpoints that changed most", ["endpoint", "", "", *head[3:]],
                         _change_rows(a["endpoints"], False)))  # fmt: skip
    if a["new_edges"]:
        console.print(_table("new edges", head, _change_rows(a["new_edges"][:10], True)))
    if a["vanished_edges"]:
        console.print(_table("vanished edges", head, _change_rows(a["vanished_edges"][:10], True)))


def show_bursts(a: dict[str, Any], console: Console) -> None:
    """Burst intervals."""
    rows = [[b["start"].replace("T", " ").removesuffix("Z"), b["end"].replace("T", " ").removesuffix("Z"),
             _num(b["buckets"]), _num(b["total"]), _num(b["peak"]), _num(b["peak_z"])] for b in a["bursts"]]  # fmt: skip
    cap = (f"{_span(a['window'])} · {a['stored_table']} · step {a['step_s']} s · median {_num(a['median'])}, "
           f"sigma {_num(a['sigma'])} · {a['elapsed_ms']:.0f} ms")  # fmt: skip
    console.print(
        _table(f"bursts of {a['metric']}", ["start", "end", "buckets", "total", "peak", "peak z"], rows, cap)
    )


def show_drill(a: dict[str, Any], console: Console) -> None:
    """Composition tables, pushes, failed handshakes, top talkers."""
    cols = ["", "role", "bytes", "out", "in", "flows", "failed", "share"]
    for key, title in (("by_peer", "by peer"), ("by_port", "by server port"), ("by_proto", "by protocol"),
                       ("by_direction", "by direction"), ("by_close_type", "by close type")):  # fmt: skip
        rows = [[p["key"], p.get("role") or "", _b(p["bytes"]), _b(p["bytes_out"]), _b(p["bytes_in"]),
                 _num(p["flows"]), _num(p["failed"]), f"{p['share'] * 100:.1f}%"] for p in a[key]]  # fmt: skip
        cap = f"{a['target']} · {_span(a['window'])} · {a['stored_table']}" if key == "by_peer" else None
        console.print(_table(f"{a['target']}: {title}", cols, rows, cap))
    if a["one_way"]:
        rows = [[f"{p['client_name']} ({p['client']})", f"{p['server_name']} ({p['server']})",
                 f"{p['server_port']}/{p['proto']}", p["direction"], _b(p["bytes_forward"]), _b(p["bytes_back"]),
                 f"{p['ratio']:.1f}"] for p in a["one_way"]]  # fmt: skip
        console.print(
            _table("one-way pushes", ["client", "server", "port", "dir", "forward", "back", "ratio"], rows)
        )
    rows = [[f"{f['client']}", f"{f['server']}:{f['server_port']}", f["close_type"], _num(f["count"]), f["first"][11:19],
             f["last"][11:19]] for f in a["failed_handshakes"]]  # fmt: skip
    console.print(_table(f"failed handshakes ({a['failed_total']})", ["client", "server", "close", "count", "first",
                                                                       "last"], rows))  # fmt: skip
    rows = [[f"{t['client']}:{t['client_port']}", f"{t['server']}:{t['server_port']}", t["proto"], _b(t["bytes_c2s"]),
             _b(t["bytes_s2c"]), t["first"][11:19], t["close_type"]] for t in a["top_talkers"]]  # fmt: skip
    console.print(_table("top talkers", ["client", "server", "proto", "c→s", "s→c", "first", "close"], rows))


def show_backtest(a: dict[str, Any], console: Console) -> None:
    """Occurrences and periodicity."""
    rows = [[o["start"].replace("T", " ").removesuffix("Z"), o["end"].replace("T", " ").removesuffix("Z"),
             _num(o["buckets"]), _num(o["total"]), _num(o["peak"])] for o in a["occurrences"]]  # fmt: skip
    cap = (f"scanned {_span(a['scanned'])} · {a['stored_table']} · {a['buckets']:,} buckets · "
           f"{a['elapsed_ms']:.0f} ms")  # fmt: skip
    console.print(_table(f"{a['describe']}: {a['count']} occurrences", ["start", "end", "buckets", "total", "peak"],
                         rows, cap))  # fmt: skip
    p = a.get("period")
    if p:
        console.print(f"[bold]periodicity:[/] {p['text']} (regularity {p['regularity']:.0%} over {p['cycles']} gaps); "
                      f"next expected {p['next_expected'].replace('T', ' ').removesuffix('Z')} UTC", highlight=False)  # fmt: skip
    else:
        console.print("[bold]periodicity:[/] fewer than two occurrences", highlight=False)


def show_signatures(a: list[dict[str, Any]], console: Console) -> None:
    """Saved signatures."""
    from cloudtap.server.analyse.signature import Signature

    rows = [[s["name"] or "", Signature.model_validate(s).describe(), s.get("description", "")] for s in a]
    console.print(_table("saved signatures", ["name", "signature", "description"], rows))


# --- commands ----------------------------------------------------------------------------------------------


def topology_command(
    since: SinceOpt = "1h", time_from: FromOpt = None, time_to: ToOpt = None, level: LevelOpt = "vm",
    vm: VmOpt = None, ip: IpOpt = None, peer: PeerOpt = None, port: PortOpt = None, proto: ProtoOpt = None,
    project: ProjectOpt = None,
    by_port: Annotated[bool, typer.Option("--by-port", help="one edge per server port")] = False,
    limit: LimitOpt = 50, server: ServerOpt = None, token: TokenOpt = None, ca: CaOpt = None,
    data: DataOpt = None, as_json: JsonOpt = False,
) -> None:  # fmt: skip
    """Nodes and client → server edges at a level, with bytes, flows, failures, retransmissions, RTT."""
    from cloudtap.server.analyse import TopologyRequest, topology

    body = {**_window(since, time_from, time_to), "level": level, "by_port": by_port, "limit": limit,
            "filter": _filter(vm=vm, ip=ip, peer=peer, port=port, proto=proto, project=project)}  # fmt: skip
    _main(lambda: _run(Remote(server, token, ca), data, "POST", "/api/v1/analysis/topology", body,
                       lambda s: topology(s, _validated(TopologyRequest, body))), as_json, show_topology)  # type: ignore[arg-type]  # fmt: skip


def compare_command(
    since: SinceOpt = "1h", time_from: FromOpt = None, time_to: ToOpt = None,
    baseline: Annotated[str | None, typer.Option(help="yesterday (default) | last_week | before")] = None,
    baseline_from: Annotated[str | None, typer.Option("--baseline-from", help="explicit baseline start")] = None,
    baseline_to: Annotated[str | None, typer.Option("--baseline-to", help="explicit baseline end")] = None,
    level: LevelOpt = "ip", metric: Annotated[str, typer.Option(help="bytes, packets, flows, failed, retrans")] = "bytes",
    step: Annotated[str, typer.Option(help="bucket of the baseline distribution")] = "1m",
    rank_by: Annotated[str, typer.Option("--rank-by", help="abs | rel | z")] = "abs",
    bursts: Annotated[int, typer.Option(help="top rows that get burst detection")] = 3,
    burst_step: Annotated[str | None, typer.Option("--burst-step", help="1s for second bursts")] = None,
    vm: VmOpt = None, ip: IpOpt = None, port: PortOpt = None, proto: ProtoOpt = None, project: ProjectOpt = None,
    limit: LimitOpt = 10, server: ServerOpt = None, token: TokenOpt = None, ca: CaOpt = None,
    data: DataOpt = None, as_json: JsonOpt = False,
) -> None:  # fmt: skip
    """Window vs baseline: edges and endpoints ranked by change, new / vanished edges, bursts."""
    from cloudtap.server.analyse import CompareRequest, compare

    body = _filter(**_window(since, time_from, time_to), baseline=baseline, baseline_from=baseline_from,
                   baseline_to=baseline_to, level=level, metric=metric, step=step, rank_by=rank_by, bursts=bursts,
                   burst_step=burst_step, limit=limit,
                   filter=_filter(vm=vm, ip=ip, port=port, proto=proto, project=project))  # fmt: skip
    _main(lambda: _run(Remote(server, token, ca), data, "POST", "/api/v1/analysis/compare", body,
                       lambda s: compare(s, _validated(CompareRequest, body))), as_json, show_compare)  # type: ignore[arg-type]  # fmt: skip


def bursts_command(
    since: SinceOpt = "3h", time_from: FromOpt = None, time_to: ToOpt = None,
    metric: Annotated[str, typer.Option(help="bytes, packets, flows, failed, retrans, oneway...")] = "bytes",
    step: Annotated[str, typer.Option(help="1s or 1m (or any whole seconds)")] = "1m",
    k: Annotated[float, typer.Option(help="robust z-score threshold")] = 3.5,
    vm: VmOpt = None, ip: IpOpt = None, peer: PeerOpt = None, port: PortOpt = None, proto: ProtoOpt = None,
    project: ProjectOpt = None, server: ServerOpt = None, token: TokenOpt = None, ca: CaOpt = None,
    data: DataOpt = None, as_json: JsonOpt = False,
) -> None:  # fmt: skip
    """Burst intervals of selected traffic (median / MAD)."""
    from cloudtap.server.analyse import BurstRequest, detect_bursts

    body = {**_window(since, time_from, time_to), "metric": metric, "step": step, "k": k,
            "filter": _filter(vm=vm, ip=ip, peer=peer, port=port, proto=proto, project=project)}  # fmt: skip
    _main(lambda: _run(Remote(server, token, ca), data, "POST", "/api/v1/analysis/bursts", body,
                       lambda s: detect_bursts(s, _validated(BurstRequest, body))), as_json, show_bursts)  # type: ignore[arg-type]  # fmt: skip


def drill_command(
    since: SinceOpt = "1h", time_from: FromOpt = None, time_to: ToOpt = None, vm: VmOpt = None, ip: IpOpt = None,
    client_ip: Annotated[str | None, typer.Option("--client-ip", help="edge: client IP")] = None,
    server_ip: Annotated[str | None, typer.Option("--server-ip", help="edge: server IP")] = None,
    port: PortOpt = None, proto: ProtoOpt = None, peer: PeerOpt = None,
    push_ratio: Annotated[float, typer.Option("--push-ratio", help="one-way push: bigger/smaller direction")] = 10.0,
    limit: LimitOpt = 10, server: ServerOpt = None, token: TokenOpt = None, ca: CaOpt = None,
    data: DataOpt = None, as_json: JsonOpt = False,
) -> None:  # fmt: skip
    """Drill into a VM, an IP or an edge: composition, one-way pushes, failed handshakes, top talkers."""
    from cloudtap.server.analyse import DrillRequest, drill

    body = {**_window(since, time_from, time_to), "limit": limit, "push_ratio": push_ratio,
            "target": _filter(vm=vm, ip=ip, client_ip=client_ip, server_ip=server_ip, port=port, proto=proto, peer=peer)}  # fmt: skip
    _main(lambda: _run(Remote(server, token, ca), data, "POST", "/api/v1/analysis/drill", body,
                       lambda s: drill(s, _validated(DrillRequest, body))), as_json, show_drill)  # type: ignore[arg-type]  # fmt: skip


WhenOpt = Annotated[
    str | None, typer.Option("--when", help="condition per bucket: bytes>50M, z(bytes)>4, oneway>10")
]
StepOpt = Annotated[str, typer.Option("--step", help="bucket: 1m (default), 1h, 1s")]


def _signature(name: str | None, when: str | None, step: str, min_buckets: int, filters: dict[str, Any],
               description: str = "") -> dict[str, Any]:  # fmt: skip
    from cloudtap.server.analyse import parse_condition
    from cloudtap.server.query.errors import QueryError

    if when is None:
        raise CliError("--when is required (e.g. --when 'bytes>50M')", 2)
    try:
        cond = parse_condition(when)
    except QueryError as exc:
        raise CliError(str(exc), 2) from exc
    sig = {"name": name, "description": description, "filter": filters, "condition": cond.model_dump(), "step": step,
           "min_buckets": min_buckets}  # fmt: skip
    return {k: v for k, v in sig.items() if v is not None}


def backtest_command(
    when: WhenOpt = None, name: Annotated[str | None, typer.Option("--name", help="run a saved signature")] = None,
    vm: VmOpt = None, ip: IpOpt = None, peer: PeerOpt = None, port: PortOpt = None, proto: ProtoOpt = None,
    step: StepOpt = "1m", min_buckets: Annotated[int, typer.Option("--min-buckets", min=1)] = 1,
    time_from: FromOpt = None, time_to: ToOpt = None,
    save: Annotated[str | None, typer.Option("--save", help="also save the signature under this name")] = None,
    limit: LimitOpt = 100, server: ServerOpt = None, token: TokenOpt = None, ca: CaOpt = None,
    data: DataOpt = None, as_json: JsonOpt = False,
) -> None:  # fmt: skip
    """Scan all stored history for a signature: occurrences, count, periodicity, next expected."""
    from cloudtap.server.analyse import BacktestRequest, Signature, SignatureStore, backtest

    def work() -> Any:
        body: dict[str, Any] = {"time_from": time_from, "time_to": time_to, "limit": limit}
        if name is not None:
            if when is not None:
                raise CliError("give --name (a saved signature) or --when, not both", 2)
            body["name"] = name
        else:
            body["signature"] = _signature(save, when, step, min_buckets,
                                           _filter(vm=vm, ip=ip, peer=peer, port=port, proto=proto))  # fmt: skip
            if save is not None:
                _run(Remote(server, token, ca), data, "PUT", f"/api/v1/analysis/signatures/{save}", body["signature"],
                     lambda s: SignatureStore(s).save(_validated(Signature, body["signature"])))  # type: ignore[arg-type]  # fmt: skip
        body = {k: v for k, v in body.items() if v is not None}

        def local(store: Any) -> Any:
            req = _validated(BacktestRequest, body)
            sig = req.signature or SignatureStore(store).get(req.name)  # type: ignore[attr-defined,arg-type]
            return backtest(store, sig, req.time_from, req.time_to, limit=req.limit)  # type: ignore[attr-defined]

        return _run(Remote(server, token, ca), data, "POST", "/api/v1/analysis/backtest", body, local)

    _main(work, as_json, show_backtest)


@signature_app.command("save")
def signature_save(
    name: Annotated[str, typer.Argument(help="signature name")], when: WhenOpt = None,
    vm: VmOpt = None, ip: IpOpt = None, peer: PeerOpt = None, port: PortOpt = None, proto: ProtoOpt = None,
    step: StepOpt = "1m", min_buckets: Annotated[int, typer.Option("--min-buckets", min=1)] = 1,
    description: Annotated[str, typer.Option(help="free text")] = "",
    server: ServerOpt = None, token: TokenOpt = None, ca: CaOpt = None,
    data: DataOpt = None, as_json: JsonOpt = False,
) -> None:  # fmt: skip
    """Save a signature (filter + --when condition) to run again."""
    from cloudtap.server.analyse import Signature, SignatureStore

    def work() -> Any:
        sig = _signature(name, when, step, min_buckets, _filter(vm=vm, ip=ip, peer=peer, port=port, proto=proto),
                         description)  # fmt: skip
        return _run(Remote(server, token, ca), data, "PUT", f"/api/v1/analysis/signatures/{name}", sig,
                    lambda s: SignatureStore(s).save(_validated(Signature, sig)))  # type: ignore[arg-type]  # fmt: skip

    _main(work, as_json, lambda a, c: show_signatures([a], c))


@signature_app.command("list")
def signature_list(
    server: ServerOpt = None,
    token: TokenOpt = None,
    ca: CaOpt = None,
    data: DataOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List saved signatures."""
    from cloudtap.server.analyse import SignatureStore

    def local(s: Any) -> Any:
        return [x.model_dump(mode="json") for x in SignatureStore(s).list()]

    _main(
        lambda: _run(Remote(server, token, ca), data, "GET", "/api/v1/analysis/signatures", None, local),
        as_json,
        show_signatures,
    )


@signature_app.command("show")
def signature_show(
    name: str,
    server: ServerOpt = None,
    token: TokenOpt = None,
    ca: CaOpt = None,
    data: DataOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show one saved signature."""
    from cloudtap.server.analyse import SignatureStore

    _main(lambda: _run(Remote(server, token, ca), data, "GET", f"/api/v1/analysis/signatures/{name}", None,
                       lambda s: SignatureStore(s).get(name)), as_json, lambda a, c: show_signatures([a], c))  # fmt: skip


@signature_app.command("delete")
def signature_delete(
    name: str, server: ServerOpt = None, token: TokenOpt = None, ca: CaOpt = None, data: DataOpt = None
) -> None:
    """Delete a saved signature."""
    from cloudtap.server.analyse import SignatureStore

    def local(s: Any) -> Any:
        SignatureStore(s).delete(name)
        return {"deleted": name}

    _main(lambda: _run(Remote(server, token, ca), data, "DELETE", f"/api/v1/analysis/signatures/{name}", None, local) or {"deleted": name},
          False, lambda a, c: c.print(f"deleted {name}"))  # fmt: skip


@signature_app.command("run")
def signature_run(
    name: str, time_from: FromOpt = None, time_to: ToOpt = None, limit: LimitOpt = 100,
    server: ServerOpt = None, token: TokenOpt = None, ca: CaOpt = None,
    data: DataOpt = None, as_json: JsonOpt = False,
) -> None:  # fmt: skip
    """Backtest a saved signature over all history (or --from/--to)."""
    from cloudtap.server.analyse import SignatureStore, backtest

    body = {
        k: v for k, v in {"time_from": time_from, "time_to": time_to, "limit": limit}.items() if v is not None
    }
    _main(lambda: _run(Remote(server, token, ca), data, "POST", f"/api/v1/analysis/signatures/{name}/run", body,
                       lambda s: backtest(s, SignatureStore(s).get(name), time_from, time_to, limit=limit)),
          as_json, show_backtest)  # fmt: skip

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

from cloudtap.cli.analyse_view import (
    show_backtest,
    show_bursts,
    show_compare,
    show_drill,
    show_signatures,
    show_topology,
)
from cloudtap.cli.errors import CliError
from cloudtap.cli.query_source import open_local_store
from cloudtap.cli.render import make_console
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
_REQUEST_HELP = "requests, errors, error_rate, latency_avg, latency_p50, latency_p90, latency_p99, latency_max (ms)"

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


# --- commands ----------------------------------------------------------------------------------------------


def topology_command(
    since: SinceOpt = "1h", time_from: FromOpt = None, time_to: ToOpt = None, level: LevelOpt = "vm",
    vm: VmOpt = None, ip: IpOpt = None, peer: PeerOpt = None, port: PortOpt = None, proto: ProtoOpt = None,
    project: ProjectOpt = None,
    by_port: Annotated[bool, typer.Option("--by-port", help="one edge per server port")] = False,
    metric: Annotated[str, typer.Option(help=f"edges biggest first by: bytes, packets, flows...; or {_REQUEST_HELP}")] = "bytes",
    limit: LimitOpt = 50, server: ServerOpt = None, token: TokenOpt = None, ca: CaOpt = None,
    data: DataOpt = None, as_json: JsonOpt = False,
) -> None:  # fmt: skip
    """Nodes and client → server edges at a level, with bytes, flows, failures, retransmissions, RTT; with a
    request --metric (latency_p99...), client → server service edges with requests, errors and latencies (ms)."""
    from cloudtap.server.analyse import TopologyRequest, topology

    body = {**_window(since, time_from, time_to), "level": level, "by_port": by_port, "limit": limit, "metric": metric,
            "filter": _filter(vm=vm, ip=ip, peer=peer, port=port, proto=proto, project=project)}  # fmt: skip
    _main(lambda: _run(Remote(server, token, ca), data, "POST", "/api/v1/analysis/topology", body,
                       lambda s: topology(s, _validated(TopologyRequest, body))), as_json, show_topology)  # type: ignore[arg-type]  # fmt: skip


def compare_command(
    since: SinceOpt = "1h", time_from: FromOpt = None, time_to: ToOpt = None,
    baseline: Annotated[str | None, typer.Option(help="yesterday (default) | last_week | before")] = None,
    baseline_from: Annotated[str | None, typer.Option("--baseline-from", help="explicit baseline start")] = None,
    baseline_to: Annotated[str | None, typer.Option("--baseline-to", help="explicit baseline end")] = None,
    level: LevelOpt = "ip",
    metric: Annotated[str, typer.Option(help=f"bytes, packets, flows, failed, retrans; or {_REQUEST_HELP}")] = "bytes",
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
    metric: Annotated[str, typer.Option(help=f"ranks the slowest requests: {_REQUEST_HELP}")] = "latency_p99",
    limit: LimitOpt = 10, server: ServerOpt = None, token: TokenOpt = None, ca: CaOpt = None,
    data: DataOpt = None, as_json: JsonOpt = False,
) -> None:  # fmt: skip
    """Drill into a VM, an IP or an edge: composition, one-way pushes, failed handshakes, top talkers; its
    requests by role, slowest statements / paths (by --metric) and error codes."""
    from cloudtap.server.analyse import DrillRequest, drill

    body = {**_window(since, time_from, time_to), "limit": limit, "push_ratio": push_ratio, "metric": metric,
            "target": _filter(vm=vm, ip=ip, client_ip=client_ip, server_ip=server_ip, port=port, proto=proto, peer=peer)}  # fmt: skip
    _main(lambda: _run(Remote(server, token, ca), data, "POST", "/api/v1/analysis/drill", body,
                       lambda s: drill(s, _validated(DrillRequest, body))), as_json, show_drill)  # type: ignore[arg-type]  # fmt: skip


WhenOpt = Annotated[
    str | None,
    typer.Option("--when", help="condition per bucket: bytes>50M, z(bytes)>4, oneway>10, latency_p99>200 (ms), "
                 "error_rate>0.05; with --metric just the test: '>200'"),
]  # fmt: skip
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


def _with_metric(when: str | None, metric: str | None) -> str | None:
    """``--when '>200' --metric latency_p99`` -> ``latency_p99>200``; a --when naming its metric as it is."""
    if metric is None or when is None:
        return when
    text = when.strip()
    if text[:1] in "<>":
        return f"{metric}{text}"
    if text.startswith("z(") or text[:1].isalpha():
        raise CliError("--when names its own metric: drop --metric or write the test only ('>200')", 2)
    return when


def backtest_command(
    when: WhenOpt = None, name: Annotated[str | None, typer.Option("--name", help="run a saved signature")] = None,
    vm: VmOpt = None, ip: IpOpt = None, peer: PeerOpt = None, port: PortOpt = None, proto: ProtoOpt = None,
    step: StepOpt = "1m", min_buckets: Annotated[int, typer.Option("--min-buckets", min=1)] = 1,
    time_from: FromOpt = None, time_to: ToOpt = None,
    metric: Annotated[str | None, typer.Option(help=f"metric of a --when without one ('>200'): {_REQUEST_HELP}...")] = None,
    save: Annotated[str | None, typer.Option("--save", help="also save the signature under this name")] = None,
    limit: LimitOpt = 100, server: ServerOpt = None, token: TokenOpt = None, ca: CaOpt = None,
    data: DataOpt = None, as_json: JsonOpt = False,
) -> None:  # fmt: skip
    """Scan all stored history for a signature: occurrences, count, periodicity, next expected."""
    from cloudtap.server.analyse import BacktestRequest, Signature, SignatureStore, backtest

    def work() -> Any:
        body: dict[str, Any] = {"time_from": time_from, "time_to": time_to, "limit": limit}
        cond = _with_metric(when, metric)
        if name is not None:
            if cond is not None:
                raise CliError("give --name (a saved signature) or --when, not both", 2)
            body["name"] = name
        else:
            body["signature"] = _signature(save, cond, step, min_buckets,
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

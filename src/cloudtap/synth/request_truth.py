"""The ground-truth request table: what a perfect request parser must report for the synthetic capture.

One row per request of a service with an application protocol, from the same packet plan and the
same per-exchange choices (:func:`cloudtap.synth._messages.exchange_choices`) the payloads are built
from. Conventions follow docs/requests.md: ``req_ns`` / ``resp_ns`` are the capture times (as
written, so microsecond files are floored) of the first transmission of the first segment of the
request and of the response; PostgreSQL requests are answered only once the response's last segment
(ReadyForQuery) is in the capture. A request without answer is ``timeout`` when the capture goes on
for ``timeout_s`` after it, else ``unanswered``. ``slow`` says the server's time came from a
contention window (an incident's ``contention`` effect).
"""

from __future__ import annotations

import ipaddress
import re

import numpy as np
import pyarrow as pa

from cloudtap.synth import _dtypes as dt
from cloudtap.synth._messages import LITERAL, exchange_choices
from cloudtap.synth.apps import ERRORS, OK_REPLY, AppTables
from cloudtap.synth.cloud import Cloud
from cloudtap.synth.sessions import SessionSet

_APP_NAMES = {code: name for name, code in dt.APP_CODES.items()}
_SQL_LITERAL = re.compile(r"'(?:[^'\\]|\\.|'')*'|\"(?:[^\"\\]|\\.|\"\")*\"|(?<![\w])\d[\w.]*")


def sql_fingerprint(sql: str) -> str:
    """Quoted strings and numbers outside identifiers become ``?``; whitespace runs one space."""
    text = _SQL_LITERAL.sub("?", sql.replace(chr(LITERAL), "1"))
    return " ".join(text.split()).removesuffix(";")


def _template_view(app: str, text: str) -> tuple[str, str, int]:
    """(request_type, resource with the literal marker, arg_count) a parser reports for a template."""
    words = text.split(" ")
    if app in ("pgsql", "mysql"):
        return ("Query" if app == "pgsql" else "QUERY"), sql_fingerprint(text), 0
    if app == "http":
        return words[0], words[1], 0
    if app == "redis":
        return words[0].upper(), words[0].upper(), len(words) - 1
    return words[0], words[1], 1  # dns: qtype, name, one question


def _resources(texts: np.ndarray, literal: np.ndarray) -> np.ndarray:
    """Each template text with its literal marker replaced by the request's number (vectorised per template)."""
    out = texts.astype(object)
    lit = literal.astype(str)
    for text in np.unique(texts):
        if chr(LITERAL) not in text:
            continue
        sel = texts == text
        parts = text.split(chr(LITERAL))
        acc = np.full(int(sel.sum()), parts[0], dtype=object)
        for part in parts[1:]:
            acc = acc + lit[sel].astype(object) + part
        out[sel] = acc
    return out


def build_request_truth(
    sessions: SessionSet, cloud: Cloud, wire: np.ndarray, plan: np.ndarray, ts_div: int, seed: int,
    timeout_s: float = 30.0,
) -> pa.Table:  # fmt: skip
    """One row per request, sorted by request time (see the module docstring)."""
    apps: AppTables | None = sessions.apps
    app_of = sessions.params[:, dt.P_APP].astype(np.int64)
    ts = plan["ts"] // ts_div * ts_div
    sess = plan["sess"].astype(np.int64)
    data = (plan["mlen"] > 0) & (plan["plen"] > 0) & (plan["retrans"] == 0)
    key = (sess << 24) | plan["xid"].astype(np.int64)
    is_req = data & (plan["moff"] == 0) & (plan["dir"] == 0)
    is_resp = data & (plan["moff"] == 0) & (plan["dir"] == 1)
    is_last = data & (plan["dir"] == 1) & (plan["moff"].astype(np.int64) + plan["plen"] == plan["mlen"])
    req = np.flatnonzero(is_req)
    if apps is None:
        raise ValueError("sessions without application tables (built outside SessionBuilder.finish)")
    req_key = key[req]
    req_ns = ts[req]
    svc = sessions.cols["svc"][sess[req]].astype(np.int64)
    app = app_of[svc]

    def lookup(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(found, plan row of the first match) of each request's key among the rows of ``mask``."""
        rows = np.flatnonzero(mask)
        k, first = np.unique(key[rows], return_index=True)
        if k.size == 0:
            return np.zeros(req_key.size, bool), np.zeros(req_key.size, np.int64)
        pos = np.minimum(np.searchsorted(k, req_key), k.size - 1)
        return k[pos] == req_key, rows[first][pos]

    has_resp, resp_row = lookup(is_resp)
    has_last, _ = lookup(is_last)
    answered = has_resp & np.where(app == dt.APP_PGSQL, has_last, True)
    resp_ns = np.where(answered, ts[resp_row], 0)
    clock = int(ts.max()) if ts.size else 0
    n = req.size
    tmpl = np.zeros(n, np.int64)
    literal = np.zeros(n, np.int64)
    err = np.zeros(n, np.int64)
    ident = np.zeros(n, np.int64)
    exchange_choices(seed, sess[req], plan["xid"][req].astype(np.int64), svc, apps.svc,
                     np.ascontiguousarray(sessions.params[:, dt.P_ERRORS]), tmpl, literal, err, ident)  # fmt: skip
    app_names = np.asarray([_APP_NAMES[int(a)] for a in range(6)], dtype=object)[app]
    views = [_template_view(apps.apps[_svc_of(apps, t)], text) for t, text in enumerate(apps.texts)]
    rtype = np.asarray([v[0] for v in views], dtype=object)[tmpl]
    resource = _resources(np.asarray([v[1] for v in views], dtype=object)[tmpl], literal)
    args = np.asarray([v[2] for v in views], np.int64)[tmpl]
    status = np.where(clock - req_ns >= int(timeout_s * 1e9), "timeout", "unanswered").astype(object)
    code = np.full(n, -1, np.int64)
    error = np.full(n, "", dtype=object)
    for name, variants in ERRORS.items():
        sel = answered & (app_names == name)
        status[sel & (err == 0)] = "ok"
        code[sel & (err == 0)] = OK_REPLY[name]
        for k, v in enumerate(variants, start=1):
            m = sel & (err == k)
            status[m], code[m], error[m] = v.status, v.code, v.error
    client = sessions.cols["client"][sess[req]]
    server = sessions.cols["server"][sess[req]]
    ip_text = np.asarray([str(ipaddress.IPv4Address(int(v))) for v in cloud.vm_ip], dtype=object)
    names = np.asarray(cloud.vm_names, dtype=object)
    cols = {
        "l7_proto": (app_names, pa.string()),
        "client_ip": (ip_text[client], pa.string()),
        "client_port": (wire["cport"][sess[req]], pa.uint16()),
        "server_ip": (ip_text[server], pa.string()),
        "server_port": (wire["sport"][sess[req]], pa.uint16()),
        "req_ns": (req_ns, pa.int64()),
        "resp_ns": (resp_ns, pa.int64()),
        "latency_us": (np.where(answered, (resp_ns - req_ns) // 1000, -1), pa.int64()),
        "request_type": (rtype, pa.string()),
        "resource": (resource, pa.string()),
        "host": (np.asarray(apps.hosts, dtype=object)[svc], pa.string()),
        "status": (status, pa.string()),
        "code": (code, pa.int32()),
        "error": (error, pa.string()),
        "arg_count": (args, pa.uint32()),
        "client_vm": (names[client], pa.string()),
        "server_vm": (names[server], pa.string()),
        "service": (np.asarray(sessions.svc_names, dtype=object)[svc], pa.string()),
        "slow": (answered & (plan["slow"][resp_row] == 1), pa.bool_()),
    }
    order = np.argsort(req_ns, kind="stable")
    arrays = [
        pa.array(v[order].tolist() if v.dtype == object else v[order], type=t) for v, t in cols.values()
    ]
    return pa.table(arrays, names=list(cols))


def _svc_of(apps: AppTables, template: int) -> int:
    """The service row a template belongs to."""
    rows = np.flatnonzero((apps.svc[:, 1] <= template) & (template < apps.svc[:, 1] + apps.svc[:, 2]))
    return int(rows[0])

"""DeepFlow's expected ``.result`` files as (request type, resource, status) per request, in order.

Each line of a ``.result`` file is one parsed message (request or response) as DeepFlow's test
printed it: JSON for DNS and MySQL, Rust ``Debug`` text for HTTP and Redis. A response belongs to
the request before it. ``naive_fingerprint`` is the slow reference of the SQL fingerprint.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

_MYSQL_COMMANDS = {2: "INIT_DB", 3: "QUERY", 14: "PING", 22: "PREPARE", 23: "EXECUTE"}
_STATUS = {"Ok": "ok", "ClientError": "client_error", "ServerError": "server_error"}


def naive_fingerprint(sql: str) -> str:
    """Literals to ``?``, whitespace collapsed, trailing ``;`` dropped (reference for the kernel)."""
    out: list[str] = []
    i, n = 0, len(sql)
    space = False
    while i < n:
        ch = sql[i]
        if ch == "\x00":
            break
        if ch in " \t\r\n":
            space = bool(out)
            i += 1
            continue
        if ch in "'\"":
            j = i + 1
            while j < n:
                if sql[j] == "\\" and j + 1 < n:
                    j += 2
                    continue
                if sql[j] == ch:
                    if j + 1 < n and sql[j + 1] == ch:
                        j += 2
                        continue
                    break
                j += 1
            tok, i = "?", j + 1
        elif ch.isdigit() and (space or not (
            out and (out[-1][-1:].isalnum() or out[-1][-1:] in "_$" or ord(out[-1][-1:] or " ") >= 128)
        )):
            j = i
            while j < n and (sql[j].isalnum() or sql[j] in "_$." or ord(sql[j]) >= 128):
                j += 1
            tok, i = "?", j
        else:
            tok, i = ch, i + 1
        if space:
            out.append(" ")
            space = False
        out.append(tok)
    text = "".join(out)
    return text[:-1] if text.endswith(";") else text


def _pair(messages: list[tuple[str, tuple]]) -> list[tuple]:
    """(kind, fields) messages to requests with the status of the response that follows each."""
    out: list[list] = []
    for kind, fields in messages:
        if kind == "req":
            out.append([*fields, None])
        elif out and out[-1][-1] is None:
            out[-1][-1] = fields
    return [tuple(r) for r in out]


def read_results(path: Path, protocol: str) -> list[tuple]:
    """Requests of one ``.result`` file: (request type, resource, response fields or None)."""
    messages: list[tuple[str, tuple]] = []
    for line in path.read_text(errors="replace").splitlines():
        if protocol in ("dns", "mysql"):
            if not line.startswith("{"):
                continue
            obj = json.loads(line[: line.rindex("}") + 1])
            if obj.get("msg_type") == "Request":
                if protocol == "dns":
                    messages.append(("req", (obj["request_type"], obj["request_resource"])))
                elif obj["request_type"] in _MYSQL_COMMANDS:
                    sql = obj.get("request_resource") or ""
                    kind = _MYSQL_COMMANDS[obj["request_type"]]
                    resource = (
                        naive_fingerprint(sql)
                        if kind in ("QUERY", "PREPARE")
                        else sql
                        if kind == "INIT_DB"
                        else ""
                    )
                    messages.append(("req", (kind, resource)))
                else:
                    messages.append(("other", ()))
            elif obj.get("msg_type") == "Response":
                messages.append(("resp", (obj.get("response_status"), obj.get("response_code"))))
        elif protocol == "redis":
            m = re.search(
                r'request_type: "(.*?)", status: ".*?", response_result: (\w+), error: "(.*?)"', line
            )
            if not m:
                continue
            if m.group(1):
                messages.append(("req", (m.group(1).upper(), m.group(1).upper())))
            else:
                error = m.group(3)[1:].split(" ")[0] if m.group(2) == "Error" else ""
                messages.append(("resp", ("server_error" if error else "ok", error)))
        elif protocol == "http":
            if "proto: Http1" not in line or "is_http: true" not in line:
                continue
            kind = re.search(r"msg_type: (\w+)", line)
            if kind and kind.group(1) == "Request":
                method = re.search(r"method: (\w+)", line)
                p = re.search(r'path: "(.*?)"', line)
                messages.append(
                    ("req", ((method.group(1) if method else "").upper(), p.group(1) if p else ""))
                )
            elif kind and kind.group(1) == "Response":
                code = re.search(r"status_code: Some\((\d+)\)", line)
                status = re.search(r" status: (\w+)", line)
                messages.append(
                    (
                        "resp",
                        (
                            _STATUS.get(status.group(1), "") if status else "",
                            int(code.group(1)) if code else 0,
                        ),
                    )
                )
    return _pair(messages)

"""One sentence for an HTTP error answer of the cloudtap API (FastAPI's ``detail`` shapes)."""

from __future__ import annotations

import json
import urllib.error
from typing import Any


def _payload(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None


def detail_text(body: bytes) -> str | None:
    """The ``detail`` of an error body when it is a plain string (401/403/404 reasons), else None."""
    payload = _payload(body)
    detail = payload.get("detail") if isinstance(payload, dict) else None
    return detail if isinstance(detail, str) else None


def describe_http_body(status: int, reason: str, body: bytes) -> str:
    """``where: message; allowed: ...`` for a 422 list, the ``detail`` text otherwise."""
    payload = _payload(body)
    if payload is None:
        return f"server answered {status} {reason}"
    detail = payload.get("detail") if isinstance(payload, dict) else None
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        d = detail[0]
        allowed = (d.get("ctx") or {}).get("allowed") if isinstance(d.get("ctx"), dict) else None
        where = ".".join(str(p) for p in d.get("loc", [])[1:])
        text = f"{where}: {d.get('msg')}" if where else str(d.get("msg"))
        return text + (f"; allowed: {', '.join(map(str, allowed))}" if allowed else "")
    return f"server answered {status}: {detail or payload}"


def describe_http_error(exc: urllib.error.HTTPError) -> str:
    """:func:`describe_http_body` of a urllib error answer (reads its body)."""
    try:
        body = exc.read()
    except OSError:
        body = b""
    return describe_http_body(exc.code, str(exc.reason), body)

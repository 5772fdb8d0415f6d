"""One sentence for an HTTP error answer of the cloudtap API (FastAPI's ``detail`` shapes)."""

from __future__ import annotations

import json
import urllib.error


def describe_http_error(exc: urllib.error.HTTPError) -> str:
    """``where: message; allowed: ...`` for a 422 list, the ``detail`` text otherwise."""
    try:
        payload = json.loads(exc.read())
    except (ValueError, OSError):
        return f"server answered {exc.code} {exc.reason}"
    detail = payload.get("detail") if isinstance(payload, dict) else None
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        d = detail[0]
        allowed = (d.get("ctx") or {}).get("allowed") if isinstance(d.get("ctx"), dict) else None
        where = ".".join(str(p) for p in d.get("loc", [])[1:])
        text = f"{where}: {d.get('msg')}" if where else str(d.get("msg"))
        return text + (f"; allowed: {', '.join(map(str, allowed))}" if allowed else "")
    return f"server answered {exc.code}: {detail or payload}"

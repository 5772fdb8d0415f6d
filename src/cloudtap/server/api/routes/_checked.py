"""CheckedRoute: JSON bodies holding NaN/Infinity or lone surrogates are refused before a route sees them."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute

_SURROGATE = "text with a lone surrogate (not UTF-8)"


def unsafe_json(doc: Any) -> dict[str, Any] | None:
    """The first value of a parsed JSON body that could not be stored or answered back, as a 422 item:
    NaN/Infinity (``json.loads`` accepts them, JSON answers cannot carry them) or text with a lone
    surrogate (``"\\ud800"``: not UTF-8). ``None`` when the body is clean."""
    stack: list[tuple[tuple[str | int, ...], Any]] = [(("body",), doc)]
    while stack:
        loc, value = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            return {"loc": list(loc), "msg": "not a finite number", "type": "finite_number"}
        if isinstance(value, str) and not _utf8(value):
            return {"loc": list(loc), "msg": _SURROGATE, "type": "string_unicode"}
        if isinstance(value, dict):
            for key, item in value.items():
                if not _utf8(key):
                    return {"loc": [*loc, "<key>"], "msg": _SURROGATE, "type": "string_unicode"}
                stack.append(((*loc, key), item))
        elif isinstance(value, list):
            stack.extend(((*loc, i), item) for i, item in enumerate(value))
    return None


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class CheckedRoute(APIRoute):
    """A route whose JSON body is refused (422, FastAPI's shape) when it holds NaN/Infinity or lone
    surrogates: such values would poison the stored state and every later answer (a 5xx)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:  # no body read: nothing to check
            return handler

        async def checked(request: Request) -> Response:
            if request.method in ("POST", "PUT", "PATCH"):
                body = await request.body()  # cached on the request: the route reads it again
                try:
                    doc = json.loads(body) if body else None
                except (ValueError, RecursionError):
                    doc = None  # not JSON: FastAPI answers 400 / 422 itself
                problem = unsafe_json(doc)
                if problem is not None:
                    return JSONResponse({"detail": [problem]}, status_code=422)
            return await handler(request)

        return checked

"""Error answers of the API routes as documented models, so OpenAPI lists every status a route returns.

``ErrorText`` is Starlette/FastAPI's plain ``{"detail": "..."}`` (a body that is not JSON: 400; an
``HTTPException`` with a text detail). ``ValidationErrorOut`` is FastAPI's 422 shape, which the routes
also use for their own checks (``loc`` names the field, ``ctx.allowed`` the accepted names).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class ErrorText(BaseModel):
    """Why the request was refused, in one sentence."""

    detail: str


class ValidationItem(BaseModel):
    """One problem with the request: where (``loc``), what (``msg``), its kind (``type``)."""

    model_config = ConfigDict(extra="allow")

    loc: list[str | int]
    msg: str
    type: str
    input: Any = None
    ctx: dict[str, Any] | None = None


class ValidationErrorOut(BaseModel):
    """FastAPI's 422 body: a list of problems."""

    detail: list[ValidationItem]


def unprocessable_item(
    where: str, field: str, message: str, allowed: list[str] | None = None
) -> dict[str, Any]:
    """One :class:`ValidationItem` as a dict (the ``detail`` entry of a 422 / 404 ``HTTPException``)."""
    item: dict[str, Any] = {"loc": [where, field], "msg": message, "type": "value_error"}
    if allowed is not None:
        item["ctx"] = {"allowed": allowed}
    return item


BAD_JSON: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorText, "description": "the body is not valid JSON"}
}
INVALID: dict[int | str, dict[str, Any]] = {
    422: {"model": ValidationErrorOut, "description": "bad input; detail names the field"}
}

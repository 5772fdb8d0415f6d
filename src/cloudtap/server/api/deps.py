"""FastAPI dependencies as ``Annotated`` aliases, so route signatures read plainly."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from cloudtap.server.settings import ServerSettings
from cloudtap.server.store.base import FlowStore


def get_store(request: Request) -> FlowStore:
    """The app's flow store."""
    return request.app.state.store  # type: ignore[no-any-return]


def get_settings(request: Request) -> ServerSettings:
    """The app's settings."""
    return request.app.state.settings  # type: ignore[no-any-return]


StoreDep = Annotated[FlowStore, Depends(get_store)]
SettingsDep = Annotated[ServerSettings, Depends(get_settings)]

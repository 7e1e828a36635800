"""Typed dependencies shared by the routers.

They are `async def` on purpose: FastAPI runs a plain `def` dependency in a worker
thread, which would add a thread hop to every request.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from sts.repository import ModelRepository
from sts.settings import ServerSettings


async def get_settings(request: Request) -> ServerSettings:
    settings: ServerSettings = request.app.state.settings
    return settings


async def get_repository(request: Request) -> ModelRepository:
    repository: ModelRepository = request.app.state.repository
    return repository


SettingsDep = Annotated[ServerSettings, Depends(get_settings)]
RepositoryDep = Annotated[ModelRepository, Depends(get_repository)]

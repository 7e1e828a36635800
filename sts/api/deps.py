"""Typed dependencies shared by the routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from sts.config import ServerSettings
from sts.repository import ModelRepository
from sts.service import InferenceService


def get_settings(request: Request) -> ServerSettings:
    settings: ServerSettings = request.app.state.settings
    return settings


def get_repository(request: Request) -> ModelRepository:
    repository: ModelRepository = request.app.state.repository
    return repository


def get_service(request: Request) -> InferenceService:
    service: InferenceService = request.app.state.service
    return service


SettingsDep = Annotated[ServerSettings, Depends(get_settings)]
RepositoryDep = Annotated[ModelRepository, Depends(get_repository)]
ServiceDep = Annotated[InferenceService, Depends(get_service)]

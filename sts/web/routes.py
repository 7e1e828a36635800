"""The dashboard's overview page: every model and version with its state."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from sts import __version__
from sts.api.deps import RepositoryDep
from sts.api.sts import model_detail
from sts.resources import resource_dir

router = APIRouter(include_in_schema=False)

_env = Environment(
    loader=FileSystemLoader(str(resource_dir("templates"))),
    autoescape=select_autoescape(default=True),
)


@router.get("/", response_class=HTMLResponse)
async def overview(request: Request, repository: RepositoryDep) -> HTMLResponse:
    models = [model_detail(m) for m in repository.models()]
    page = _env.get_template("index.html").render(
        models=models,
        ready=repository.ready.is_set(),
        uptime_seconds=int(time.time() - repository.started_at),
        version=__version__,
        root=request.scope.get("root_path", ""),
    )
    return HTMLResponse(page)

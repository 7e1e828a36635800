"""The dashboard: overview, a page per model, and live metrics.

Pages are rendered here from the repository (never by calling the server over HTTP);
their scripts then talk to the server's own JSON API from the browser, with the same
credentials the browser already sent for the page.
"""

from __future__ import annotations

import json
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from sts import __version__
from sts.api.deps import RepositoryDep
from sts.codegen.clients import LANGUAGES, PROTOCOLS
from sts.codegen.examples import example_data, image_inputs, unknown_shape_note
from sts.errors import ModelNotFound, StsError, shorten
from sts.optimize.report import read_report
from sts.protocols.sts.views import model_detail
from sts.resources import resource_dir

router = APIRouter(include_in_schema=False)

_env = Environment(
    loader=FileSystemLoader(str(resource_dir("templates"))),
    autoescape=select_autoescape(default=True),
)


def plural(count: int, noun: str) -> str:
    """`1 version`, `2 versions`, `0 versions`."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


_env.filters["plural"] = plural


def _page(request: Request, template: str, status_code: int = 200, **values: Any) -> HTMLResponse:
    repository = request.app.state.repository
    page = _env.get_template(template).render(
        ready=repository.ready.is_set(),
        uptime_seconds=int(time.time() - repository.started_at),
        version=__version__,
        root=request.scope.get("root_path", ""),
        **values,
    )
    return HTMLResponse(page, status_code=status_code)


@router.get("/", response_class=HTMLResponse)
async def overview(request: Request, repository: RepositoryDep) -> HTMLResponse:
    models = [model_detail(m) for m in repository.models()]
    for detail in models:
        labels: dict[int, list[str]] = {}
        for label, number in detail["version_labels"].items():
            labels.setdefault(number, []).append(label)
        for version in detail["versions"]:
            version["labels"] = labels.get(version["version"], [])
    return _page(request, "index.html", models=models)


@router.get("/dashboard", response_class=HTMLResponse)
async def dashboard() -> RedirectResponse:
    return RedirectResponse("./")


@router.get("/dashboard/models/{model_name}", response_class=HTMLResponse)
async def model_page(model_name: str, request: Request, repository: RepositoryDep) -> HTMLResponse:
    try:
        model = repository.model(model_name)
    except ModelNotFound:  # a page, not the API's JSON: the served models and a way back
        names = [m.name for m in repository.models()]
        return _page(request, "not_found.html", 404, name=shorten(model_name), models=names)
    detail = model_detail(model)
    examples: dict[str, str] = {}
    images: dict[str, list[str]] = {}
    notes: dict[str, str] = {}  # inputs of unknown rank: the signature.json to write
    latest = model.latest()
    if latest is not None:
        for name, signature in latest.signatures.items():
            try:
                data = example_data(signature, model.config.image, batch_size=1)
            except StsError:
                data = {}
            examples[name] = json.dumps(
                {"model_name": model.name, "signature_name": name, "data": data}, indent=2
            )
            notes[name] = unknown_shape_note(signature, latest.path)
            found = image_inputs(signature, model.config.image)
            # An upload fills one input: offered when that is all the signature takes.
            single = len(signature.inputs) == 1 or model.config.image.input is not None
            images[name] = found if single else []
    # Versions written by `sts optimize` carry its report.
    reports = {mv.version: r for mv in model.version_list() if (r := read_report(mv.path))}
    return _page(
        request,
        "model.html",
        model=detail,
        reports=reports,
        examples=examples,
        images=images,
        notes=notes,
        languages=list(LANGUAGES),
        filenames={name: spec[1] for name, spec in LANGUAGES.items()},
        protocols=PROTOCOLS,
    )


@router.get("/dashboard/metrics", response_class=HTMLResponse)
async def metrics_page(request: Request, repository: RepositoryDep) -> HTMLResponse:
    return _page(request, "metrics.html", models=[m.name for m in repository.models()])

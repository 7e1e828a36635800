"""`/docs` (Swagger UI) and `/redoc` (ReDoc) from assets installed with sts.

The bundles come from the `fastapi-offline` package (Swagger UI and ReDoc's standalone
builds), served under `/static/docs`, so the pages render on an air-gapped host. A
content security policy keeps the pages from reaching anything but this server (ReDoc's
footer logo would otherwise be fetched from Redocly's CDN).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib.resources import files
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_URL = "/static/docs"
SAME_ORIGIN_ONLY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; worker-src 'self' blob:; connect-src 'self'"
)
Endpoint = Callable[[Request], Awaitable[HTMLResponse]]


def install_docs(app: FastAPI, docs_url: str = "/docs", redoc_url: str = "/redoc") -> None:
    """Mount the bundles and add both pages (before `/static` is mounted, so that
    `/static/docs` is matched first). The app must be built with `docs_url=None,
    redoc_url=None`."""
    assets = Path(str(files("fastapi_offline") / "static"))
    app.mount(ASSETS_URL, StaticFiles(directory=assets), name="docs-assets")
    redirect_url = f"{docs_url}/oauth2-redirect"

    def page(render: Callable[..., HTMLResponse], title: str, **options: Any) -> Endpoint:
        """A docs page: `render` (FastAPI's) with the schema's URL and every option ending
        in `_url` under the request's root path, and the same-origin policy."""

        async def docs_page(request: Request) -> HTMLResponse:
            root = request.scope.get("root_path", "")
            rooted = {k: f"{root}{v}" if k.endswith("_url") else v for k, v in options.items()}
            html = render(
                openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - {title}", **rooted
            )
            html.headers["Content-Security-Policy"] = SAME_ORIGIN_ONLY
            return html

        return docs_page

    swagger_ui = page(
        get_swagger_ui_html,
        "Swagger UI",
        oauth2_redirect_url=redirect_url,
        swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
        swagger_favicon_url=f"{ASSETS_URL}/favicon.png",
    )
    redoc = page(
        get_redoc_html,
        "ReDoc",
        redoc_js_url=f"{ASSETS_URL}/redoc.standalone.js",
        redoc_favicon_url=f"{ASSETS_URL}/favicon.png",
        with_google_fonts=False,
    )
    app.get(docs_url, include_in_schema=False)(swagger_ui)
    app.get(redoc_url, include_in_schema=False)(redoc)

    @app.get(redirect_url, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

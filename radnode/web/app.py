"""The web application factory: ``create_app(settings)``.

It serves health, readiness and Prometheus metrics (open, for probes and
scrapers), the JSON API under ``/api`` and server-rendered pages (login,
jobs, submit, routing, connectivity). Routers stay thin and call
the service modules of ``radnode.web`` (jobs, results, options, pulls, routing_edit, connectivity), which uses the same store functions as the CLI and
workers. Who may do what is decided in ``radnode.web.auth``: reads need a
viewer, changes a radiologist or admin, and browser sessions must echo their
CSRF token on every change.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import AsyncIterator
from urllib.parse import quote

import structlog
from fastapi import Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from starlette.exceptions import HTTPException as StarletteHTTPException

from radnode import __version__
from radnode.metrics import make_registry
from radnode.settings import Settings
from radnode.web.auth import Forbidden, LoginRequired, SessionCodec, resolve_principal
from radnode.web.errors import ServiceError
from radnode.web.pulls import pull_runner

log = structlog.get_logger(__name__)

HERE = Path(__file__).parent

#: Same-origin only: no CDN, no inline script, the report PDF framed only by our pages.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'self'; frame-ancestors 'self'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "SAMEORIGIN",
}


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/") or request.url.path == "/openapi.json" or "application/json" in request.headers.get("accept", "")


def create_app(settings: Settings) -> FastAPI:
    from radnode.analyzers.registry import Registry
    from radnode.store.db import open_store
    from radnode.web.routers import accounts, api, pages

    engine, sessions = open_store(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        engine.dispose()

    guard_docs = settings.web.docs_require_login
    app = FastAPI(
        title="radnode",
        version=__version__,
        lifespan=lifespan,
        # With web.docs_require_login the schema and docs are served below, behind a viewer login.
        docs_url=None if guard_docs else "/docs",
        redoc_url=None if guard_docs else "/redoc",
        openapi_url=None if guard_docs else "/openapi.json",
        description="radnode's web API. Authenticate with `Authorization: Bearer <token>` (`radnode tokens add`), "
        "or with a browser session plus the `X-CSRF-Token` header on every change.",
    )
    app.state.settings = settings
    app.state.db = sessions
    app.state.sessions_codec = SessionCodec(settings)
    app.state.registry = Registry.from_settings(settings)
    app.state.pull_runner = pull_runner(settings, sessions)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.globals["radnode_version"] = __version__
    templates.env.filters["datetime"] = lambda ts: datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    app.state.templates = templates
    metrics = make_registry(sessions)

    @app.middleware("http")
    async def security_headers(request: Request, call_next):  # type: ignore[no-untyped-def]
        response = await call_next(request)
        for key, value in SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        if not request.url.path.startswith("/static/"):
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, _exc: LoginRequired) -> Response:
        if _wants_json(request):
            return JSONResponse({"detail": "authentication required"}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, exc: Forbidden) -> Response:
        if _wants_json(request):
            return JSONResponse({"detail": exc.message}, status_code=403)
        return pages.error_page(request, 403, exc.message)

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> Response:
        if _wants_json(request):
            return JSONResponse({"detail": exc.message}, status_code=exc.status)
        return pages.error_page(request, exc.status, exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if _wants_json(request) or exc.status_code == 405:
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None))
        return pages.error_page(request, exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        # Authentication comes before validation: an anonymous caller learns nothing about the body.
        try:
            if resolve_principal(request) is None:
                return await login_required(request, LoginRequired())
        except LoginRequired:
            return await login_required(request, LoginRequired())
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok", "version": __version__}

    @app.get("/readyz", tags=["ops"])
    def readyz(response: Response) -> dict[str, str]:
        """The job store answers (what every page needs)."""
        try:
            with engine.connect() as c:
                c.execute(text("SELECT 1"))
        except Exception as exc:
            response.status_code = 503
            return {"status": "unavailable", "database": str(exc)[:200]}
        return {"status": "ready"}

    @app.get("/metrics", tags=["ops"])
    def prometheus() -> Response:
        return Response(generate_latest(metrics), media_type=CONTENT_TYPE_LATEST)

    if guard_docs:
        from fastapi.openapi.docs import get_swagger_ui_html

        from radnode.web.auth import require

        @app.get("/openapi.json", include_in_schema=False)
        def openapi_schema(_: object = Depends(require("viewer"))) -> JSONResponse:
            return JSONResponse(app.openapi())

        @app.get("/docs", include_in_schema=False)
        def swagger(_: object = Depends(require("viewer"))) -> Response:
            return get_swagger_ui_html(openapi_url="/openapi.json", title="radnode API")

    app.include_router(api.router)
    app.include_router(pages.router)
    app.include_router(accounts.router)
    from radnode.web.routers import corrections  # series labels and their corrections (classifier retraining)

    app.include_router(corrections.router)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    return app

"""The web application factory: ``create_app(settings)``.

Today it serves health, readiness, Prometheus metrics and a read-only JSON
view of jobs and studies; routers stay thin and call the same store
functions the CLI and workers use. Nothing here changes state: the pages and
endpoints that do (submit, retry, cancel, routing edits) come with login and
CSRF protection.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import FastAPI, HTTPException, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from radnode import __version__
from radnode.jobs import store
from radnode.jobs.commands import job_dict
from radnode.metrics import make_registry
from radnode.settings import Settings


def create_app(settings: Settings) -> FastAPI:
    from radnode.services import open_store

    engine, sessions = open_store(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        engine.dispose()

    app = FastAPI(title="radnode", version=__version__, lifespan=lifespan)
    metrics = make_registry(sessions)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok", "version": __version__}

    @app.get("/readyz")
    def readyz(response: Response) -> dict[str, str]:
        """The job store answers (what every page needs)."""
        try:
            with engine.connect() as c:
                c.execute(text("SELECT 1"))
        except Exception as exc:
            response.status_code = 503
            return {"status": "unavailable", "database": str(exc)[:200]}
        return {"status": "ready"}

    @app.get("/metrics")
    def prometheus() -> Response:
        return Response(generate_latest(metrics), media_type=CONTENT_TYPE_LATEST)

    @app.get("/api/jobs")
    def list_jobs(state: str | None = None, application: str | None = None, limit: int = 50) -> list[dict]:  # type: ignore[type-arg]
        with sessions() as s:
            return [job_dict(r) for r in store.list_jobs(s, state=state, application=application, limit=min(limit, 500))]

    @app.get("/api/jobs/{job_id}")
    def get_job(job_id: str) -> dict:  # type: ignore[type-arg]
        with sessions() as s:
            try:
                row = store.get_job(s, job_id)
            except store.JobNotFound as exc:
                raise HTTPException(404, str(exc)) from exc
            data = job_dict(row)
            data["measurements"] = [{"name": m.name, "value": m.value, "unit": m.unit, "code": m.code} for m in store.job_measurements(s, row.job_id)]
            return data

    return app

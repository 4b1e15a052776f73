"""The JSON API: everything the pages do, for scripts and other systems.

Reads need the viewer role, submit/retry/cancel/flag the radiologist role,
routing edits and connectivity checks the admin role. A browser session must
send ``X-CSRF-Token`` with every POST/PUT; a bearer token needs none.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session, sessionmaker

from radnode.routing.rules import RoutingFileError
from radnode.settings import Settings
from radnode.web import (
    connectivity,
    deps,
    errors,
    jobs,
    options,
    pulls,
    retraining,
    routing_edit,
    schemas,
)
from radnode.web.auth import Principal, require

router = APIRouter(prefix="/api", tags=["api"])

_ERRORS: dict[int | str, dict[str, Any]] = {401: {"model": schemas.Problem}, 403: {"model": schemas.Problem}}


@router.get("/jobs", response_model=list[schemas.JobOut], responses=_ERRORS)
def list_jobs(
    state: str | None = None,
    application: str | None = None,
    since: date | None = None,
    until: date | None = None,
    critical: bool = False,
    limit: int = 50,
    _: Principal = Depends(require("viewer")),
    sessions: sessionmaker[Session] = Depends(deps.db),
) -> list[dict[str, Any]]:
    """Recent jobs, newest first, filtered by state, application, creation day (UTC, inclusive) and
    (``critical``) to those whose result has a present critical finding."""
    with sessions() as s:
        return jobs.list_jobs(s, state=state, application=application, since=since, until=until, critical=critical, limit=limit)


@router.get("/jobs/{job_id}", response_model=schemas.JobDetail, responses=_ERRORS)
def get_job(
    job_id: str,
    _: Principal = Depends(require("viewer")),
    settings: Settings = Depends(deps.settings),
    sessions: sessionmaker[Session] = Depends(deps.db),
) -> dict[str, Any]:
    """One job: stages with durations, selection, measurements, audit events, result files."""
    with sessions() as s:
        return jobs.job_detail(s, settings, job_id)


@router.post("/jobs", status_code=202, response_model=schemas.SubmitAccepted, responses=_ERRORS | {503: {"model": schemas.Problem}})
def submit(
    body: schemas.SubmitRequest,
    request: Request,
    who: Principal = Depends(require("radiologist")),
    settings: Settings = Depends(deps.settings),
    sessions: sessionmaker[Session] = Depends(deps.db),
) -> dict[str, Any]:
    """Pull a study by accession from PACS and run an application on it (202: the pull id; follow it at /api/pulls/{id})."""
    if body.application not in deps.installed_applications(request):
        raise errors.ServiceError(422, f"unknown application {body.application!r}")
    chosen = options.validate_options(deps.spec(request, body.application), body.options)
    return pulls.submit_pull(settings, sessions, body.accession, body.application, chosen, who.name, runner=request.app.state.pull_runner, registry=request.app.state.registry, pacs=body.pacs)


@router.get("/pulls/{pull_id}", response_model=schemas.PullOut, responses=_ERRORS)
def get_pull(pull_id: int, _: Principal = Depends(require("viewer")), sessions: sessionmaker[Session] = Depends(deps.db)) -> dict[str, Any]:
    """A pull's progress (finding → retrieving → received → routed, or failed with a diagnosis) and its job."""
    return pulls.get_pull(sessions, pull_id)


@router.post("/jobs/{job_id}/retry", response_model=schemas.JobOut, responses=_ERRORS)
def retry(job_id: str, who: Principal = Depends(require("radiologist")), sessions: sessionmaker[Session] = Depends(deps.db)) -> dict[str, Any]:
    """Queue a finished, failed or cancelled job again."""
    return jobs.retry_job(sessions, job_id, who.name)


@router.post("/jobs/{job_id}/cancel", response_model=schemas.JobOut, responses=_ERRORS)
def cancel(job_id: str, who: Principal = Depends(require("radiologist")), sessions: sessionmaker[Session] = Depends(deps.db)) -> dict[str, Any]:
    """Cancel a queued or running job."""
    return jobs.cancel_job(sessions, job_id, who.name)


@router.post("/jobs/{job_id}/flag", response_model=schemas.FlagResult, responses=_ERRORS)
def flag(
    job_id: str,
    body: schemas.FlagRequest,
    who: Principal = Depends(require("radiologist")),
    settings: Settings = Depends(deps.settings),
    sessions: sessionmaker[Session] = Depends(deps.db),
) -> dict[str, Any]:
    """Copy the job's inputs, results and a note into the retraining archive."""
    return retraining.flag_for_retraining(settings, sessions, job_id, body.note, who.name)


@router.get("/routing", response_model=schemas.RoutingOut, responses=_ERRORS)
def get_routing(_: Principal = Depends(require("admin")), settings: Settings = Depends(deps.settings)) -> dict[str, Any]:
    """The routing rules in force."""
    return routing_edit.routing_state(settings)


@router.put("/routing", response_model=schemas.RoutingVersion, responses=_ERRORS | {422: {"model": schemas.RoutingInvalid}, 409: {"model": schemas.Problem}})
def put_routing(
    body: schemas.RoutingPut,
    request: Request,
    who: Principal = Depends(require("admin")),
    settings: Settings = Depends(deps.settings),
    sessions: sessionmaker[Session] = Depends(deps.db),
) -> Any:
    """Replace the rules; an invalid file is refused with every issue and the old rules stay in force."""
    try:
        row = routing_edit.save_routing(settings, sessions, deps.declared_applications(request), body.text, who.name, comment=body.comment, base_sha256=body.base_sha256)
    except RoutingFileError as exc:
        return _invalid(exc)
    return _version(row)


@router.get("/routing/versions", response_model=list[schemas.RoutingVersion], responses=_ERRORS)
def versions(_: Principal = Depends(require("admin")), sessions: sessionmaker[Session] = Depends(deps.db)) -> list[dict[str, Any]]:
    """Every version saved through the web, newest first."""
    with sessions() as s:
        return [_version(r) for r in routing_edit.routing_versions(s)]


@router.post("/routing/rollback/{version}", response_model=schemas.RoutingVersion, responses=_ERRORS | {422: {"model": schemas.RoutingInvalid}})
def rollback(
    version: int,
    request: Request,
    who: Principal = Depends(require("admin")),
    settings: Settings = Depends(deps.settings),
    sessions: sessionmaker[Session] = Depends(deps.db),
) -> Any:
    """Install an earlier version again (validated again: applications may have changed)."""
    try:
        row = routing_edit.rollback_routing(settings, sessions, deps.declared_applications(request), version, who.name)
    except RoutingFileError as exc:
        return _invalid(exc)
    return _version(row)


@router.post("/connectivity/echo", response_model=list[schemas.EchoResult], responses=_ERRORS)
def echo(
    body: schemas.EchoRequest,
    who: Principal = Depends(require("admin")),
    settings: Settings = Depends(deps.settings),
    sessions: sessionmaker[Session] = Depends(deps.db),
) -> list[dict[str, Any]]:
    """C-ECHO the configured peers (or one) and diagnose failures."""
    return connectivity.run_echo(settings, sessions, body.peer, who.name)


@router.post("/connectivity/destinations", response_model=list[schemas.DestinationCheck], responses=_ERRORS)
def check_destinations(
    body: schemas.DestinationCheckRequest,
    who: Principal = Depends(require("admin")),
    settings: Settings = Depends(deps.settings),
    sessions: sessionmaker[Session] = Depends(deps.db),
) -> list[dict[str, Any]]:
    """Test the routing file's result destinations (or one) as a send would reach them: C-ECHO, QIDO-RS,
    EHLO/STARTTLS/AUTH, an MLLP connection, FHIR ``metadata``, a webhook request."""
    return connectivity.run_destination_checks(settings, sessions, body.destination, who.name)


def _version(row: Any) -> dict[str, Any]:
    return {"id": row.id, "created_at": row.created_at, "author": row.author, "comment": row.comment}


def _invalid(exc: RoutingFileError) -> JSONResponse:
    return JSONResponse(
        status_code=422,
        content={"detail": "invalid routing file; the previous rules stay in force", "issues": [{"line": i.line, "column": i.column, "message": i.message} for i in exc.issues]},
    )

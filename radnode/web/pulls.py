"""Submit by accession: record a pull (``radnode.jobs.pull``), run it in
the background, and report its progress and the job it became."""

from __future__ import annotations

from typing import Any

import structlog
from sqlalchemy.orm import Session, sessionmaker

from radnode.jobs import pull
from radnode.settings import Settings
from radnode.store import jobs as jobstore
from radnode.web.errors import ServiceError

log = structlog.get_logger(__name__)


def pull_dict(sessions: sessionmaker[Session], row: Any) -> dict[str, Any]:
    """A pull's progress, and its job once the study has been routed."""
    job = pull.pull_job(sessions, row)
    return {
        "pull_id": row.id,
        "state": row.state,
        "message": row.message,
        "accession": row.accession,
        "application": row.application,
        "pacs": row.pacs,
        "requested_by": row.requested_by,
        "study_instance_uid": row.study_instance_uid,
        "instances_expected": row.instances_expected,
        "instances_received": row.instances_received,
        "job_id": job.job_id if job is not None else None,
    }


def submit_pull(
    settings: Settings,
    sessions: sessionmaker[Session],
    accession: str,
    application: str,
    options: dict[str, Any],
    actor: str,
    *,
    runner: Any = None,
    pacs: str | None = None,
    registry: Any = None,
) -> dict[str, Any]:
    """Record a pull by accession (``radnode.jobs.pull``) and start it in the background.

    The pull is validated and recorded before any PACS is contacted; the
    caller gets its id at once and follows it on the pull page.
    """
    try:
        row = pull.request_pull(settings, sessions, accession, application, options, pacs, requested_by=actor, registry=registry)
    except pull.PullError as exc:
        raise ServiceError(422, str(exc)) from None
    with sessions.begin() as s:
        jobstore.record_event(s, actor, "submit", detail=f"pull {row.id}: {application} from {row.pacs}")
    if runner is not None:
        runner.submit(row.id)
    else:
        pull.start_pull(settings, sessions, row.id)
    return {"pull_id": row.id, "state": row.state, "job_id": None}


def get_pull(sessions: sessionmaker[Session], pull_id: int) -> dict[str, Any]:
    try:
        row = pull.get_pull(sessions, pull_id)
    except LookupError as exc:
        raise ServiceError(404, str(exc)) from None
    return pull_dict(sessions, row)


def pull_runner(settings: Settings, sessions: sessionmaker[Session]) -> pull.PullRunner:
    """The background runner for pulls (one per web app)."""
    return pull.PullRunner(settings, sessions)

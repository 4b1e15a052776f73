"""Jobs as the pages and the API show them: lists with filters, a job's
detail, retry and cancel (each audited with the acting user's name)."""

from __future__ import annotations

import json
from datetime import date, datetime, timezone
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from radnode.jobs.commands import job_dict
from radnode.model.jobs import JobState
from radnode.settings import Settings
from radnode.store import jobs as jobstore
from radnode.store.studies import StudyRow
from radnode.web.errors import ServiceError
from radnode.web.metastases import metastasis_block
from radnode.web.rano import rano_block
from radnode.web.results import result_files

log = structlog.get_logger(__name__)


RETRYABLE = frozenset({JobState.FAILED, JobState.NEEDS_INPUT, JobState.CANCELLED, JobState.DONE})


def _day_start(d: date) -> float:
    return datetime(d.year, d.month, d.day, tzinfo=timezone.utc).timestamp()


def list_jobs(
    session: Session,
    *,
    state: str | None = None,
    application: str | None = None,
    since: date | None = None,
    until: date | None = None,
    critical: bool = False,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Newest first; *since*/*until* are inclusive UTC days of creation; *critical*: only flagged results."""
    q = select(jobstore.JobRow).order_by(jobstore.JobRow.created_at.desc()).limit(max(1, min(limit, 500)))
    if state:
        q = q.where(jobstore.JobRow.state == state)
    if application:
        q = q.where(jobstore.JobRow.application == application)
    if since:
        q = q.where(jobstore.JobRow.created_at >= _day_start(since))
    if until:
        q = q.where(jobstore.JobRow.created_at < _day_start(until) + 86400)
    if critical:
        q = q.where(jobstore.JobRow.critical.is_(True))
    return [job_dict(r) | {"accession": r.accession} for r in session.scalars(q).all()]


def applications_seen(session: Session) -> list[str]:
    return sorted(session.scalars(select(jobstore.JobRow.application).distinct()).all())


def job_detail(session: Session, settings: Settings, job_id: str) -> dict[str, Any]:
    """Everything the job page shows: the job, its stages, measurements, audit and result files."""
    try:
        row = jobstore.get_job(session, job_id)
    except jobstore.JobNotFound as exc:
        raise ServiceError(404, str(exc)) from exc
    data = job_dict(row) | {"accession": row.accession, "options": json.loads(row.options_json)}
    data["measurements"] = [{"name": m.name, "value": m.value, "unit": m.unit, "code": m.code} for m in jobstore.job_measurements(session, row.job_id)]
    data["rano"] = rano_block(data["measurements"])  # glioma: RANO diameters and the follow-up (#13)
    data["events"] = [
        {"at": datetime.fromtimestamp(e.at, timezone.utc).isoformat(timespec="seconds"), "actor": e.actor, "action": e.action, "detail": e.detail}
        for e in jobstore.job_events(session, row.job_id)
    ]
    stages = []
    order = ("created", "queued", "preprocessing", "inferring", "writing", "sending", "finished")
    stamps = [(name, getattr(row, f"{name}_at")) for name in order]
    present = [(n, t) for n, t in stamps if t is not None]
    for i, (name, at) in enumerate(present):
        nxt = present[i + 1][1] if i + 1 < len(present) else None
        stages.append({"stage": name, "at": datetime.fromtimestamp(at, timezone.utc).isoformat(timespec="seconds"), "seconds": None if nxt is None else round(nxt - at, 1)})
    data["stages"] = stages
    data["retraining"] = [
        {"note": c.note, "flagged_by": c.flagged_by, "archive_path": c.archive_path, "at": datetime.fromtimestamp(c.created_at, timezone.utc).isoformat(timespec="seconds")}
        for c in session.scalars(select(jobstore.RetrainingCaseRow).where(jobstore.RetrainingCaseRow.job_id == row.job_id)).all()
    ]
    data["files"] = result_files(settings, row.job_id)
    data["metastases"] = metastasis_block(data["measurements"], data["files"])  # lesion by lesion, with thumbnails
    study = session.get(StudyRow, row.study_instance_uid)
    data["study_completed_reason"] = study.completed_reason if study is not None and study.completed_reason else None
    return data


def resolve_job_id(session: Session, job_id: str) -> str:
    try:
        return jobstore.get_job(session, job_id).job_id
    except jobstore.JobNotFound as exc:
        raise ServiceError(404, str(exc)) from exc


def retry_job(sessions: sessionmaker[Session], job_id: str, actor: str) -> dict[str, Any]:
    with sessions.begin() as s:
        jid = resolve_job_id(s, job_id)
        try:
            row = jobstore.requeue(s, jid, actor=actor, reason=f"retry requested by {actor}")
        except jobstore.TransitionError as exc:
            raise ServiceError(409, str(exc)) from exc
        return job_dict(row)


def cancel_job(sessions: sessionmaker[Session], job_id: str, actor: str) -> dict[str, Any]:
    with sessions.begin() as s:
        jid = resolve_job_id(s, job_id)
        try:
            row = jobstore.cancel(s, jid, actor=actor)
        except jobstore.TransitionError as exc:
            raise ServiceError(409, str(exc)) from exc
        return job_dict(row)

"""The durable job store: jobs with explicit state transitions, their
measurements (structured data for warehousing), routing decisions, and an
audit trail of who or what did what, when.

It is also the outbox: a job committed here with ``published_at`` unset is
published by the outbox loop whenever the broker is reachable, so a job is
never lost because the broker was down at the moment it was created.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from sqlalchemy import Boolean, Float, ForeignKey, Integer, String, Text, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from radnode.model.jobs import (
    ELECTIVE_PRIORITY,
    RUNNING_STATES,
    TRANSITIONS,
    AnalyzeJob,
    Destination,
    JobState,
    Trigger,
    job_identity,
)
from radnode.store.db import Base

if TYPE_CHECKING:
    from radnode.model.analysis import Finding

_STAGE_COLUMN = {
    JobState.QUEUED: "queued_at",
    JobState.PREPROCESSING: "preprocessing_at",
    JobState.INFERRING: "inferring_at",
    JobState.WRITING: "writing_at",
    JobState.SENDING: "sending_at",
    JobState.DONE: "finished_at",
    JobState.FAILED: "finished_at",
    JobState.NEEDS_INPUT: "finished_at",
    JobState.CANCELLED: "finished_at",
}


class JobRow(Base):
    __tablename__ = "jobs"

    job_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), index=True)
    accession: Mapped[str] = mapped_column(String(16), default="")
    application: Mapped[str] = mapped_column(String(64), index=True)
    model_version: Mapped[str] = mapped_column(String(128))
    trigger: Mapped[str] = mapped_column(String(16))
    series_json: Mapped[str] = mapped_column(Text, default="{}")
    selection_json: Mapped[str] = mapped_column(Text, default="{}")
    options_json: Mapped[str] = mapped_column(Text, default="{}")
    destinations_json: Mapped[str] = mapped_column(Text, default="[]")
    state: Mapped[str] = mapped_column(String(16), index=True)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    queued_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    preprocessing_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    inferring_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    writing_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    sending_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    published_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    result_uids_json: Mapped[str] = mapped_column(Text, default="[]")
    flags_json: Mapped[str] = mapped_column(Text, default="[]")
    superseded_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: The worker running the job and until when its claim holds (heartbeat).
    claimed_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_until: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: A one-way hash of the patient's identity, to find this patient's earlier results (trend).
    patient_key: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    study_date: Mapped[str | None] = mapped_column(String(8), nullable=True)
    #: Per destination: instances sent, failed, series confirmed, last error.
    sends_json: Mapped[str] = mapped_column(Text, default="{}")
    #: Queue priority (``radnode.model.jobs``: urgent applications' jobs go first); added in 0009.
    priority: Mapped[int] = mapped_column(Integer, default=ELECTIVE_PRIORITY)
    #: The last run's qualitative findings: [{name, present, probability, detail, critical}]; added in 0009.
    findings_json: Mapped[str] = mapped_column(Text, default="[]")
    #: Whether a finding of the last run is present and critical (the job list's badge, the metric); added in 0009.
    critical: Mapped[bool] = mapped_column(Boolean, default=False, index=True)

    @property
    def series(self) -> dict[str, str]:
        return json.loads(self.series_json)  # type: ignore[no-any-return]

    @property
    def flags(self) -> list[str]:
        return json.loads(self.flags_json)  # type: ignore[no-any-return]

    @property
    def result_uids(self) -> list[str]:
        return json.loads(self.result_uids_json)  # type: ignore[no-any-return]

    @property
    def findings(self) -> list[dict[str, Any]]:
        return json.loads(self.findings_json or "[]")  # type: ignore[no-any-return]

    @property
    def critical_findings(self) -> list[str]:
        """Names of the present critical findings (what the CRITICAL badge says)."""
        return [f["name"] for f in self.findings if f.get("present") and f.get("critical")]

    def message(self) -> AnalyzeJob:
        """The queue message for this job."""
        return AnalyzeJob(
            job_id=self.job_id,
            study_instance_uid=self.study_instance_uid,
            application=self.application,
            model_version=self.model_version,
            series=self.series,
            options=json.loads(self.options_json),
            destinations=[Destination.model_validate(d) for d in json.loads(self.destinations_json)],
            trigger=Trigger(self.trigger),
            priority=self.priority or ELECTIVE_PRIORITY,
        )


class MeasurementRow(Base):
    __tablename__ = "measurements"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(64), ForeignKey("jobs.job_id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    value: Mapped[float] = mapped_column(Float)
    unit: Mapped[str] = mapped_column(String(32))
    code: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_at: Mapped[float] = mapped_column(Float)


class AuditRow(Base):
    __tablename__ = "audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[float] = mapped_column(Float, index=True)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    study_instance_uid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    detail: Mapped[str] = mapped_column(Text, default="")
    #: Where the action came from (client address, "cli", AE@host); added in 0006.
    source: Mapped[str | None] = mapped_column(String(64), nullable=True)


class RoutingDecisionRow(Base):
    __tablename__ = "routing_decisions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), index=True)
    generation: Mapped[int] = mapped_column(Integer)
    matched: Mapped[bool] = mapped_column(Boolean)
    applications_json: Mapped[str] = mapped_column(Text, default="[]")
    explanation: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[float] = mapped_column(Float)


class RetrainingCaseRow(Base):
    """A job flagged for retraining: its inputs and outputs copied to the archive."""

    __tablename__ = "retraining_cases"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(64), ForeignKey("jobs.job_id", ondelete="CASCADE"), index=True)
    note: Mapped[str] = mapped_column(Text, default="")
    flagged_by: Mapped[str] = mapped_column(String(64))
    archive_path: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)


class TransitionError(Exception):
    """A state change that the job's current state does not allow."""


class JobNotFound(LookupError):
    pass


@dataclass(frozen=True)
class JobRequest:
    """What routing asks for: one application on one study."""

    study_instance_uid: str
    application: str
    model_version: str
    series: dict[str, str]
    trigger: Trigger = Trigger.AUTO
    accession: str = ""
    options: dict[str, Any] | None = None
    destinations: Sequence[Destination] = ()
    #: role → {series uid, label, probability, needs_confirmation}, for review.
    selection: dict[str, Any] | None = None
    #: Set when a role is missing: the job is recorded as needs-input.
    needs_input: str | None = None
    #: Set when the job cannot run at all (e.g. no analyzer installed): recorded as failed.
    error: str | None = None
    flags: Sequence[str] = ()
    patient_key: str | None = None
    study_date: str | None = None
    #: Queue priority (the registry's: urgent applications get ``URGENT_PRIORITY``).
    priority: int = ELECTIVE_PRIORITY


def record_event(
    session: Session,
    actor: str,
    action: str,
    *,
    job_id: str | None = None,
    study_instance_uid: str | None = None,
    detail: str = "",
    source: str | None = None,
) -> None:
    """Append one audit entry (who or what did what, when, from where)."""
    session.add(
        AuditRow(
            at=time.time(), actor=actor[:64], action=action[:64], job_id=job_id, study_instance_uid=study_instance_uid,
            detail=detail[:2000], source=None if source is None else source[:64],
        )
    )


def create_job(session: Session, request: JobRequest, actor: str = "router") -> tuple[JobRow, bool]:
    """Create the job for *request* unless the same job exists; return (job, created).

    Older jobs for the same study and application with other inputs are
    marked superseded by the new one (kept, not deleted).
    """
    job_id = job_identity(request.study_instance_uid, request.application, request.model_version, request.series)
    existing = session.get(JobRow, job_id)
    if existing is not None:
        return existing, False
    now = time.time()
    if request.error:
        state = JobState.FAILED
    elif request.needs_input:
        state = JobState.NEEDS_INPUT
    else:
        state = JobState.QUEUED
    row = JobRow(
        job_id=job_id,
        study_instance_uid=request.study_instance_uid,
        accession=request.accession[:16],
        application=request.application,
        model_version=request.model_version,
        trigger=request.trigger.value,
        series_json=json.dumps(request.series, sort_keys=True),
        selection_json=json.dumps(request.selection or {}, sort_keys=True),
        options_json=json.dumps(request.options or {}, sort_keys=True),
        destinations_json=json.dumps([d.model_dump() for d in request.destinations]),
        state=state.value,
        created_at=now,
        updated_at=now,
        queued_at=now if state is JobState.QUEUED else None,
        finished_at=None if state is JobState.QUEUED else now,
        error=request.error or request.needs_input,
        flags_json=json.dumps(list(request.flags)),
        attempts=0,
        patient_key=request.patient_key,
        study_date=request.study_date,
        sends_json="{}",
        priority=request.priority,
        findings_json="[]",
        critical=False,
    )
    session.add(row)
    older = session.scalars(
        select(JobRow).where(
            JobRow.study_instance_uid == request.study_instance_uid,
            JobRow.application == request.application,
            JobRow.job_id != job_id,
            JobRow.superseded_by.is_(None),
        )
    ).all()
    for old in older:
        old.superseded_by = job_id
        old.flags_json = json.dumps(sorted(set(old.flags) | {"superseded"}))
        record_event(session, actor, "superseded", job_id=old.job_id, study_instance_uid=old.study_instance_uid, detail=f"by {job_id}")
    record_event(session, actor, "created", job_id=job_id, study_instance_uid=request.study_instance_uid, detail=f"{request.application} ({state.value})")
    return row, True


def get_job(session: Session, job_id: str) -> JobRow:
    row = session.get(JobRow, job_id)
    if row is None:
        # Allow unambiguous prefixes, as operators type them.
        matches = session.scalars(select(JobRow).where(JobRow.job_id.like(f"{job_id}%")).limit(2)).all()
        if len(matches) != 1:
            raise JobNotFound(f"no job {job_id!r}" if not matches else f"job id prefix {job_id!r} is ambiguous")
        row = matches[0]
    return row


def transition(
    session: Session, job_id: str, to: JobState, *, actor: str, error: str | None = None, detail: str = ""
) -> JobRow:
    """Move a job to *to* if its current state allows it; stamp and audit it."""
    row = get_job(session, job_id)
    current = JobState(row.state)
    if to not in TRANSITIONS[current]:
        raise TransitionError(f"job {row.job_id} cannot go from {current.value} to {to.value}")
    now = time.time()
    row.state = to.value
    row.updated_at = now
    setattr(row, _STAGE_COLUMN[to], now)
    if error is not None or to in (JobState.QUEUED, JobState.DONE):
        row.error = error
    record_event(session, actor, f"state:{to.value}", job_id=row.job_id, study_instance_uid=row.study_instance_uid, detail=detail or (error or ""))
    return row


class ClaimRefused(Exception):
    """Another live worker holds the job, or the job is finished."""


def claim(session: Session, job_id: str, worker: str, *, lease_seconds: float, take_over: bool) -> JobRow:
    """Claim a job for *worker* and begin an attempt (state → preprocessing).

    A queued job is claimed outright. A job in a running state is taken over
    only when its holder is gone: the broker re-delivered it (*take_over*:
    the previous consumer's channel closed) or its lease expired. A duplicate
    message for a job another worker is running is refused, so each job runs
    once at a time.
    """
    row = get_job(session, job_id)
    state = JobState(row.state)
    now = time.time()
    if state.terminal:
        raise ClaimRefused(f"job is {state.value}")
    if state in RUNNING_STATES and not take_over and (row.lease_until or 0) > now:
        raise ClaimRefused(f"job is {state.value} on {row.claimed_by}")
    previous_holder, attempts = row.claimed_by, row.attempts
    # Compare-and-set on what was read: two workers handed the same job (the outbox of each worker may publish
    # a job before the other marks it published) both read "queued"; only the first UPDATE still matches, the
    # second sees the new state (PostgreSQL re-checks the row after the lock, SQLite serialises writers).
    won = session.execute(
        update(JobRow)
        .where(
            JobRow.job_id == row.job_id,
            JobRow.state == state.value,
            JobRow.attempts == attempts,
            (JobRow.claimed_by.is_(None) if previous_holder is None else JobRow.claimed_by == previous_holder),
        )
        .values(claimed_by=worker, lease_until=now + lease_seconds, attempts=attempts + 1)
        .execution_options(synchronize_session=False)
    ).rowcount
    if won != 1:
        session.expire(row)
        raise ClaimRefused("another worker claimed the job at the same moment")
    session.expire(row)
    detail = f"attempt {attempts + 1} on {worker}" + (f" (taking over from {previous_holder})" if state in RUNNING_STATES else "")
    return transition(session, row.job_id, JobState.PREPROCESSING, actor=worker, detail=detail)


def renew_lease(session: Session, job_id: str, worker: str, lease_seconds: float) -> None:
    session.execute(
        update(JobRow).where(JobRow.job_id == job_id, JobRow.claimed_by == worker).values(lease_until=time.time() + lease_seconds)
    )


def requeue(session: Session, job_id: str, *, actor: str, reason: str = "") -> JobRow:
    """Operator retry: back to queued and into the outbox."""
    row = transition(session, job_id, JobState.QUEUED, actor=actor, detail=reason or "retry requested")
    row.published_at = None
    row.attempts = 0
    row.finished_at = None
    return row


def cancel(session: Session, job_id: str, *, actor: str) -> JobRow:
    return transition(session, job_id, JobState.CANCELLED, actor=actor, detail="cancelled")


def add_measurements(session: Session, job_id: str, measurements: Iterable[tuple[str, float, str, str | None]]) -> None:
    """Replace a job's measurements (a retried job re-emits the same set)."""
    session.query(MeasurementRow).filter(MeasurementRow.job_id == job_id).delete()
    now = time.time()
    for name, value, unit, code in measurements:
        session.add(MeasurementRow(job_id=job_id, name=name, value=float(value), unit=unit, code=code, created_at=now))


def record_findings(session: Session, job_id: str, findings: Iterable["Finding"]) -> list[str]:
    """Replace a job's findings with its latest run's; return the names of the
    present critical ones (the job is flagged critical when there are any)."""
    row = get_job(session, job_id)
    stored = [
        {"name": f.name, "present": bool(f.present), "probability": f.probability, "detail": f.detail, "critical": bool(f.critical)}
        for f in findings
    ]
    row.findings_json = json.dumps(stored)
    names = row.critical_findings
    row.critical = bool(names)
    return names


def add_flags(session: Session, job_id: str, flags: Iterable[str]) -> None:
    row = get_job(session, job_id)
    row.flags_json = json.dumps(sorted(set(row.flags) | set(flags)))


def unpublished(session: Session, limit: int = 100) -> list[JobRow]:
    """The outbox: queued jobs not yet accepted by the broker."""
    return list(
        session.scalars(
            select(JobRow)
            .where(JobRow.state == JobState.QUEUED.value, JobRow.published_at.is_(None))
            .order_by(JobRow.priority.desc(), JobRow.created_at)
            .limit(limit)
        ).all()
    )


def mark_published(session: Session, job_id: str) -> None:
    session.execute(update(JobRow).where(JobRow.job_id == job_id).values(published_at=time.time()))


def requeue_interrupted(session: Session, actor: str) -> list[str]:
    """At the start of an embedded node, whose in-memory queue died with the
    last process: running jobs go back to queued, and every queued job goes
    back into the outbox to be published again."""
    rows = session.scalars(select(JobRow).where(JobRow.state.in_([s.value for s in RUNNING_STATES]))).all()
    for row in rows:
        transition(session, row.job_id, JobState.QUEUED, actor=actor, detail="interrupted by a restart")
    session.execute(update(JobRow).where(JobRow.state == JobState.QUEUED.value).values(published_at=None))
    return [r.job_id for r in rows]


def list_jobs(
    session: Session, *, state: str | None = None, application: str | None = None, critical: bool = False, limit: int = 50
) -> list[JobRow]:
    q = select(JobRow).order_by(JobRow.created_at.desc()).limit(limit)
    if state:
        q = q.where(JobRow.state == state)
    if application:
        q = q.where(JobRow.application == application)
    if critical:
        q = q.where(JobRow.critical.is_(True))
    return list(session.scalars(q).all())


def job_measurements(session: Session, job_id: str) -> list[MeasurementRow]:
    return list(session.scalars(select(MeasurementRow).where(MeasurementRow.job_id == job_id).order_by(MeasurementRow.id)).all())


def job_events(session: Session, job_id: str) -> list[AuditRow]:
    return list(session.scalars(select(AuditRow).where(AuditRow.job_id == job_id).order_by(AuditRow.id)).all())


def record_routing(session: Session, study_instance_uid: str, generation: int, matched: bool, applications: list[str], explanation: str) -> None:
    session.add(
        RoutingDecisionRow(
            study_instance_uid=study_instance_uid,
            generation=generation,
            matched=matched,
            applications_json=json.dumps(applications),
            explanation=explanation,
            created_at=time.time(),
        )
    )


def prior_measurements(session: Session, job: JobRow, names: Sequence[str]) -> list[tuple[str, dict[str, float]]]:
    """This patient's earlier results of the same application (for trends).

    Earlier means an earlier study date (or, without dates, an earlier
    finished job); superseded jobs are left out.
    """
    if not job.patient_key:
        return []
    rows = session.scalars(
        select(JobRow).where(
            JobRow.patient_key == job.patient_key,
            JobRow.application == job.application,
            JobRow.state == JobState.DONE.value,
            JobRow.superseded_by.is_(None),
            JobRow.job_id != job.job_id,
            JobRow.study_instance_uid != job.study_instance_uid,
        )
    ).all()
    out = []
    for row in rows:
        if job.study_date and row.study_date and row.study_date >= job.study_date:
            continue
        values = {m.name: m.value for m in job_measurements(session, row.job_id) if m.name in names}
        if values:
            out.append((row.study_date or "", values))
    out.sort(key=lambda item: item[0])
    return out


def record_sends(session: Session, job_id: str, sends: dict[str, Any]) -> None:
    row = get_job(session, job_id)
    row.sends_json = json.dumps(sends, sort_keys=True)


def record_send(session: Session, job_id: str, name: str, outcome: dict[str, Any]) -> None:
    """Merge one destination's outcome into the job's per-destination record.

    Kept across attempts and operator retries: the dispatch stage reads it to
    skip what was already delivered.
    """
    row = get_job(session, job_id)
    sends = json.loads(row.sends_json or "{}")
    sends[name] = outcome
    row.sends_json = json.dumps(sends, sort_keys=True)


def record_bounce(session: Session, job_id: str, recipient: str, bounce: dict[str, Any]) -> tuple[str | None, bool]:
    """Add a bounce (a delivery status notification for *recipient*) to the job's e-mail outcome.

    The outcome is the e-mail destination that delivered to *recipient* (or
    refused it), else the job's only e-mail destination. ``bounce["dsn"]``
    identifies the notification: the same one for the same recipient is
    recorded once, however often the mailbox is read. Returns (destination
    name, newly recorded); the name is None when no e-mail destination of
    the job can be meant.
    """
    row = get_job(session, job_id)
    sends: dict[str, Any] = json.loads(row.sends_json or "{}")
    mail = {name: o for name, o in sends.items() if isinstance(o, dict) and o.get("kind") == "email"}
    wanted = recipient.lower()
    named = [n for n, o in mail.items() if wanted in {str(a).lower() for a in [*o.get("items", []), *(o.get("failed") or {})]}]
    candidates = named or (list(mail) if len(mail) == 1 else [])
    if not candidates:
        return None, False
    name = min(candidates)
    outcome = mail[name]
    bounces = list(outcome.get("bounces") or [])
    if any(b.get("dsn") == bounce.get("dsn") and str(b.get("recipient", "")).lower() == wanted for b in bounces):
        return name, False
    outcome["bounces"] = bounces + [{**bounce, "recipient": recipient}]
    row.sends_json = json.dumps(sends, sort_keys=True)
    return name, True

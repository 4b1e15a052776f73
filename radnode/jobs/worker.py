"""The analyze stage: turn one queue delivery into one job's results.

``JobHandler.handle`` parses the message (and nothing else), claims the job
in the store, runs the analyzer on the spooled series in a private work
folder, stores measurements, findings (a present critical one flags the job)
and flags, lets the result writers produce and
send DICOM objects, and only then tells the broker to acknowledge. Permanent
problems (malformed message, unknown application, vanished inputs, bad
options, an ``AnalyzerError``) fail the job with a clear reason and are
dead-lettered at once; anything else is retried with growing delay up to the
attempt limit, then dead-lettered with the job marked ``failed``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import structlog
from pydantic import ValidationError
from sqlalchemy.orm import Session, sessionmaker

from radnode.analyzers.base import (
    AnalyzerError,
    AnalyzerInputs,
    AnalyzerResult,
    AnalyzerSpec,
    FollowUpAnalyzer,
    Measurement,
    SeriesInput,
)
from radnode.analyzers.registry import (
    OptionsError,
    Registry,
    RegistryError,
    parse_options,
)
from radnode.model.jobs import AnalyzeJob, JobState
from radnode.model.validation import describe
from radnode.queue.base import Delivery, HandlerResult
from radnode.sr_writer.writer import ResultWriteError
from radnode.store import jobs as jobstore
from radnode.uids import is_valid_uid

log = structlog.get_logger(__name__)


#: Produces (and sends) the DICOM result objects of a finished analysis:
#: ``writer(job, spec, inputs, result, workdir, progress)`` returns the SOP
#: Instance UIDs it wrote. Raising ``AnalyzerError`` or ``ResultWriteError``
#: (an object could not be built) fails the job; any other exception is retried.
ResultWriter = Callable[[AnalyzeJob, AnalyzerSpec, AnalyzerInputs, AnalyzerResult, Path, Callable[[str], None]], list[str]]


class _Permanent(Exception):
    """Fail the job now and dead-letter the message: a retry cannot help."""


def compare_with_priors(sessions: sessionmaker[Session], analyzer: object, job: AnalyzeJob, result: AnalyzerResult) -> list[Measurement]:
    """Let a :class:`FollowUpAnalyzer` compare *result* with the patient's earlier results.

    Reads the rows its ``spec.prior_rows`` names from this patient's earlier
    jobs of the same application and returns the rows the analyzer added to
    *result*; nothing for an analyzer without a follow-up. Runs before the
    job's measurements are stored, so they include the comparison.
    """
    if not isinstance(analyzer, FollowUpAnalyzer) or not analyzer.spec.prior_rows:
        return []
    with sessions() as session:
        row = jobstore.get_job(session, job.job_id)
        priors = jobstore.prior_measurements(session, row, analyzer.spec.prior_rows)
        patient_key = row.patient_key or job.study_instance_uid
    return analyzer.follow_up(result, priors, patient_key)


@dataclass
class JobHandler:
    """Handles deliveries for one worker process (thread-safe per delivery)."""

    sessions: sessionmaker[Session]
    registry: Registry
    spool_root: Path
    work_root: Path
    max_attempts: int = 3
    lease_seconds: float = 60.0
    writers: Sequence[ResultWriter] = ()
    keep_workdir: bool = True
    name: str = ""

    def __post_init__(self) -> None:
        if not self.name:
            self.name = f"{socket.gethostname()}:{os.getpid()}"

    # -- the broker-facing entry point ---------------------------------------

    def handle(self, delivery: Delivery) -> HandlerResult:
        try:
            job = AnalyzeJob.model_validate_json(delivery.body)
        except ValidationError as exc:
            reason = f"malformed job message: {describe(exc, top='message')[:500]}"
            self._fail_unparsed(delivery, reason)
            return HandlerResult.dead(reason)
        worker = f"{self.name}/{threading.current_thread().name}"
        bound = log.bind(job_id=job.job_id, application=job.application, study_uid=job.study_instance_uid)
        try:
            with self.sessions.begin() as session:
                row = jobstore.claim(
                    session, job.job_id, worker, lease_seconds=self.lease_seconds, take_over=delivery.redelivered
                )
                attempt = row.attempts
        except jobstore.JobNotFound:
            return HandlerResult.dead(f"job {job.job_id} is not in the job store")
        except (jobstore.ClaimRefused, jobstore.TransitionError) as exc:
            bound.info("delivery skipped", reason=str(exc))
            return HandlerResult.ack()

        if attempt > self.max_attempts:
            reason = f"gave up after {self.max_attempts} attempts (the worker kept dying)"
            self._finish(job.job_id, JobState.FAILED, worker, error=reason)
            return HandlerResult.dead(reason)

        heartbeat = _Heartbeat(self.sessions, job.job_id, worker, self.lease_seconds)
        heartbeat.start()
        try:
            self._run(job, worker, bound)
        except _Permanent as exc:
            self._finish(job.job_id, JobState.FAILED, worker, error=str(exc))
            bound.warning("job failed", reason=str(exc))
            return HandlerResult.dead(str(exc))
        except _Cancelled:
            bound.info("job cancelled while running")
            return HandlerResult.ack()
        except Exception as exc:  # transient or unknown: retry with delay
            reason = f"{type(exc).__name__}: {exc}"[:2000]
            if attempt >= self.max_attempts:
                self._finish(job.job_id, JobState.FAILED, worker, error=f"failed after {attempt} attempts: {reason}")
                bound.error("job failed for good", attempts=attempt, error=reason)
                return HandlerResult.dead(reason)
            self._finish(job.job_id, JobState.QUEUED, worker, error=f"attempt {attempt} failed: {reason}", published=True)
            bound.warning("job attempt failed; will retry", attempt=attempt, error=reason)
            return HandlerResult.retry(reason)
        finally:
            heartbeat.stop()
        return HandlerResult.ack()

    # -- the job itself --------------------------------------------------------

    def _run(self, job: AnalyzeJob, worker: str, bound: structlog.typing.FilteringBoundLogger) -> None:
        try:
            analyzer = self.registry.get(job.application)
        except RegistryError as exc:
            raise _Permanent(str(exc)) from exc
        spec = analyzer.spec
        try:
            options = parse_options(spec, job.options)
        except OptionsError as exc:
            raise _Permanent(str(exc)) from exc
        inputs = AnalyzerInputs(
            study_instance_uid=job.study_instance_uid,
            series=self._series_inputs(job),
            options=options,
            job_id=job.job_id,
        )
        workdir = self.work_root / job.job_id
        if workdir.exists():
            shutil.rmtree(workdir)  # a previous attempt's leftovers
        workdir.mkdir(parents=True)

        def progress(stage: str) -> None:
            self._stage(job.job_id, JobState(stage), worker)

        bound.info("job started")
        try:
            result = analyzer.run(inputs, workdir, progress)
        except AnalyzerError as exc:
            raise _Permanent(f"{job.application}: {exc}") from exc
        compare_with_priors(self.sessions, analyzer, job, result)  # e.g. glioma: lesion tracking, RANO (#13)
        self._stage(job.job_id, JobState.WRITING, worker)
        with self.sessions.begin() as session:
            jobstore.add_measurements(session, job.job_id, [(m.name, m.value, m.unit, "|".join(m.code) if m.code else None) for m in result.measurements])
            # Stored before anything is sent: the job page and the metrics show a
            # critical result even while its delivery is still being retried.
            critical = jobstore.record_findings(session, job.job_id, result.findings)
            if critical:
                jobstore.record_event(session, worker, "critical", job_id=job.job_id, study_instance_uid=job.study_instance_uid,
                                      detail=", ".join(critical))
            if result.flags:
                jobstore.add_flags(session, job.job_id, result.flags)
        if critical:
            bound.warning("critical finding", findings=critical)  # finding names and UIDs only, no patient data
        uids: list[str] = []
        for writer in self.writers:
            try:
                uids += writer(job, spec, inputs, result, workdir, lambda stage: self._stage(job.job_id, JobState(stage), worker))
            except (AnalyzerError, ResultWriteError) as exc:  # building the objects is deterministic: no retry
                raise _Permanent(str(exc)) from exc
        with self.sessions.begin() as session:
            row = jobstore.get_job(session, job.job_id)
            row.result_uids_json = json.dumps(uids)
        self._finish(job.job_id, JobState.DONE, worker)
        bound.info("job done", measurements=len(result.measurements), objects=len(uids), critical=bool(critical))
        if not self.keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)

    def _series_inputs(self, job: AnalyzeJob) -> dict[str, SeriesInput]:
        inputs = {}
        for role, series_uid in job.series.items():
            if not (is_valid_uid(series_uid) and is_valid_uid(job.study_instance_uid)):
                raise _Permanent(f"role {role}: invalid series or study UID in the job")
            folder = self.spool_root / job.study_instance_uid / series_uid
            files = tuple(sorted(folder.glob("*.dcm"))) if folder.is_dir() else ()
            if not files:
                raise _Permanent(f"the input series for role {role!r} ({series_uid}) is no longer in the spool")
            inputs[role] = SeriesInput(role=role, series_instance_uid=series_uid, files=files)
        return inputs

    def _stage(self, job_id: str, to: JobState, worker: str) -> None:
        with self.sessions.begin() as session:
            row = jobstore.get_job(session, job_id)
            if row.state == JobState.CANCELLED.value:
                raise _Cancelled()
            if row.state != to.value:
                jobstore.transition(session, job_id, to, actor=worker)

    def _finish(self, job_id: str, to: JobState, worker: str, *, error: str | None = None, published: bool = False) -> None:
        with self.sessions.begin() as session:
            row = jobstore.get_job(session, job_id)
            if row.state == to.value or JobState(row.state) is JobState.CANCELLED:
                return
            jobstore.transition(session, job_id, to, actor=worker, error=error)
            row.claimed_by = None
            row.lease_until = None
            if to is JobState.QUEUED and published:
                # The broker holds the retry (delayed); the outbox must not republish it.
                row.published_at = row.published_at or 0.0

    def _fail_unparsed(self, delivery: Delivery, reason: str) -> None:
        """Mark the job failed if the broken message still names a known job."""
        try:
            job_id = json.loads(delivery.body).get("job_id")
        except (ValueError, AttributeError):
            return
        if not isinstance(job_id, str):
            return
        try:
            with self.sessions.begin() as session:
                row = session.get(jobstore.JobRow, job_id)
                if row is not None and not JobState(row.state).terminal:
                    jobstore.transition(session, job_id, JobState.FAILED, actor=self.name, error=reason)
        except Exception as exc:  # never crash the consumer over bookkeeping
            log.warning("could not mark malformed job failed", error=str(exc)[:200])


class _Cancelled(Exception):
    pass


class _Heartbeat:
    """Renews the job's lease while it runs, so a live claim is visible."""

    def __init__(self, sessions: sessionmaker[Session], job_id: str, worker: str, lease: float) -> None:
        self._args = (sessions, job_id, worker, lease)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"lease-{job_id[:8]}")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        sessions, job_id, worker, lease = self._args
        while not self._stop.wait(lease / 3):
            try:
                with sessions.begin() as session:
                    jobstore.renew_lease(session, job_id, worker, lease)
            except Exception as exc:
                log.warning("lease renewal failed", job_id=job_id, error=str(exc)[:200])

"""A result writer that cannot build an object fails the job at once with its reason (issue 12).

Building SEG/SR/PDF/SC from the same inputs is deterministic, so a ``ResultWriteError`` must not send the
job round the retry loop: the worker fails it and dead-letters the message naming the object. Any other
exception from a writer (a PACS that is down) is still retried.
"""

from __future__ import annotations

from pathlib import Path

from radnode.analyzers.registry import Registry
from radnode.jobs.worker import JobHandler
from radnode.model.jobs import AnalyzeJob, JobState
from radnode.queue.base import Delivery, Outcome
from radnode.settings import Settings
from radnode.sr_writer.writer import ResultWriteError
from radnode.store import jobs as store
from radnode.store.db import open_store

STUDY = "1.2.826.0.1.3680043.8.498.1"
SERIES = {"t1c": "1.2.826.0.1.3680043.8.498.2", "flair": "1.2.826.0.1.3680043.8.498.3"}


def _handler(tmp_path: Path, writer) -> tuple[JobHandler, AnalyzeJob]:  # type: ignore[no-untyped-def]
    settings = Settings(data_dir=tmp_path / "data")
    _, sessions = open_store(settings)
    spool = tmp_path / "spool"
    for uid in SERIES.values():
        (spool / STUDY / uid).mkdir(parents=True)
        (spool / STUDY / uid / "1.dcm").write_bytes(b"counted, never parsed")
    with sessions.begin() as s:
        row, _ = store.create_job(s, store.JobRequest(STUDY, "count-test", "1.0", dict(SERIES)))
        job = AnalyzeJob(job_id=row.job_id, study_instance_uid=STUDY, application="count-test", model_version="1.0", series=dict(SERIES))
    handler = JobHandler(sessions, Registry(["tests.support.analyzers:CountingAnalyzer"]), spool, tmp_path / "work",
                         writers=[writer], name="w-test")
    return handler, job


def _state(handler: JobHandler, job_id: str) -> tuple[str, str | None]:
    with handler.sessions() as s:
        row = store.get_job(s, job_id)
        return row.state, row.error


def test_a_result_write_error_fails_the_job_without_retry(tmp_path: Path) -> None:
    def writer(*_args):  # type: ignore[no-untyped-def]
        raise ResultWriteError("writing results failed: SEG: source_images: item 0 lacks ImageOrientationPatient")

    handler, job = _handler(tmp_path, writer)
    result = handler.handle(Delivery(job.model_dump_json().encode(), job.job_id, job.application))
    assert result.outcome is Outcome.DEAD and "SEG: source_images" in result.reason
    state, error = _state(handler, job.job_id)
    assert state == JobState.FAILED.value and error is not None and "writing results failed: SEG" in error


def test_another_writer_exception_is_retried(tmp_path: Path) -> None:
    def writer(*_args):  # type: ignore[no-untyped-def]
        raise ConnectionError("PACS down")

    handler, job = _handler(tmp_path, writer)
    result = handler.handle(Delivery(job.model_dump_json().encode(), job.job_id, job.application))
    assert result.outcome is Outcome.RETRY and "PACS down" in result.reason
    assert _state(handler, job.job_id)[0] == JobState.QUEUED.value

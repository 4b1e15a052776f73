"""The job store: identity, transitions, supersession, outbox, migrations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from radnode.store import jobs as jobstore
from radnode.model.jobs import AnalyzeJob, JobState, Trigger, job_identity
from radnode.store.db import make_engine, make_sessionmaker, migrate
from tests.support.require import unavailable




def _request(series: dict[str, str] | None = None, **kw) -> jobstore.JobRequest:  # type: ignore[no-untyped-def]
    return jobstore.JobRequest(
        study_instance_uid="1.2.3.4",
        application="glioma",
        model_version="1.0+demo-1",
        series=series or {"t1c": "1.2.3.4.5", "flair": "1.2.3.4.6"},
        **kw,
    )


def test_same_inputs_give_the_same_job_and_changed_series_supersede(sessions) -> None:  # type: ignore[no-untyped-def]
    with sessions.begin() as s:
        first, created = jobstore.create_job(s, _request())
        again, created_again = jobstore.create_job(s, _request(series={"flair": "1.2.3.4.6", "t1c": "1.2.3.4.5"}))
    assert created and not created_again and first.job_id == again.job_id
    assert first.job_id == job_identity("1.2.3.4", "glioma", "1.0+demo-1", {"t1c": "1.2.3.4.5", "flair": "1.2.3.4.6"})
    with sessions.begin() as s:
        newer, created = jobstore.create_job(s, _request(series={"t1c": "1.2.3.4.9", "flair": "1.2.3.4.6"}))
    assert created and newer.job_id != first.job_id
    with sessions() as s:
        old = jobstore.get_job(s, first.job_id)
        assert old.superseded_by == newer.job_id and "superseded" in old.flags
        assert jobstore.get_job(s, newer.job_id).superseded_by is None
        actions = [e.action for e in jobstore.job_events(s, first.job_id)]
    assert actions == ["created", "superseded"]


def test_transitions_are_explicit_and_stamped(sessions) -> None:  # type: ignore[no-untyped-def]
    with sessions.begin() as s:
        job, _ = jobstore.create_job(s, _request())
        job_id = job.job_id
    with sessions.begin() as s:
        row = jobstore.claim(s, job_id, "w1", lease_seconds=60, take_over=False)
        assert row.attempts == 1 and row.state == "preprocessing"
        for state in (JobState.INFERRING, JobState.WRITING, JobState.SENDING, JobState.DONE):
            jobstore.transition(s, job_id, state, actor="w1")
    with sessions() as s:
        row = jobstore.get_job(s, job_id)
        assert row.state == "done"
        assert row.queued_at <= row.preprocessing_at <= row.inferring_at <= row.writing_at <= row.sending_at <= row.finished_at
        with pytest.raises(jobstore.TransitionError):
            jobstore.transition(s, job_id, JobState.INFERRING, actor="w1")
        with pytest.raises(jobstore.ClaimRefused):
            jobstore.claim(s, job_id, "w2", lease_seconds=60, take_over=True)


def test_claim_refuses_a_live_duplicate_but_takes_over_a_redelivery(sessions) -> None:  # type: ignore[no-untyped-def]
    with sessions.begin() as s:
        job_id = jobstore.create_job(s, _request())[0].job_id
        jobstore.claim(s, job_id, "w1", lease_seconds=60, take_over=False)
    with sessions.begin() as s:
        with pytest.raises(jobstore.ClaimRefused):
            jobstore.claim(s, job_id, "w2", lease_seconds=60, take_over=False)
    with sessions.begin() as s:
        row = jobstore.claim(s, job_id, "w2", lease_seconds=60, take_over=True)
        assert row.claimed_by == "w2" and row.attempts == 2


def _two_workers_handed_the_same_job(sessions) -> None:  # type: ignore[no-untyped-def]
    """Both read "queued" before either writes (two copies of the message, one per worker); one claim wins."""
    with sessions.begin() as s:
        job_id = jobstore.create_job(s, _request({"t1c": "1.2.3.4.50", "flair": "1.2.3.4.60"}))[0].job_id
    late = sessions()
    late.begin()
    seen = jobstore.get_job(late, job_id)  # worker 2 has read the job (and holds what it read) ...
    assert seen.state == "queued"
    with sessions.begin() as s:
        jobstore.claim(s, job_id, "w1", lease_seconds=60, take_over=False)  # ... worker 1 claims and commits ...
    with pytest.raises(jobstore.ClaimRefused, match="same moment"):
        jobstore.claim(late, job_id, "w2", lease_seconds=60, take_over=False)  # ... worker 2 acts on what it read
    late.rollback()
    late.close()
    with sessions() as s:
        row = jobstore.get_job(s, job_id)
        assert (row.claimed_by, row.attempts, row.state) == ("w1", 1, "preprocessing")


def test_two_workers_handed_the_same_job_at_once_run_it_once(sessions) -> None:  # type: ignore[no-untyped-def]
    _two_workers_handed_the_same_job(sessions)


def test_needs_input_and_failed_requests_are_recorded_not_queued(sessions) -> None:  # type: ignore[no-untyped-def]
    with sessions.begin() as s:
        ni, _ = jobstore.create_job(s, _request(series={"t1c": "1.2.3.4.5"}, needs_input="missing role 'flair'"))
        fa, _ = jobstore.create_job(s, jobstore.JobRequest("1.2.3.4", "hemorrhage", "not-installed", {}, error="no analyzer"))
    with sessions() as s:
        assert jobstore.get_job(s, ni.job_id).state == "needs-input"
        assert jobstore.get_job(s, fa.job_id).state == "failed"
        assert jobstore.unpublished(s) == []


def test_outbox_cancel_retry_and_message_round_trip(sessions) -> None:  # type: ignore[no-untyped-def]
    with sessions.begin() as s:
        job_id = jobstore.create_job(s, _request(options={"bias_field_correct": True}, trigger=Trigger.PULL))[0].job_id
    with sessions() as s:
        [pending] = jobstore.unpublished(s)
        msg = pending.message()
    assert AnalyzeJob.model_validate_json(msg.model_dump_json()) == msg
    assert msg.options == {"bias_field_correct": True} and msg.trigger is Trigger.PULL
    with sessions.begin() as s:
        jobstore.mark_published(s, job_id)
        jobstore.cancel(s, job_id, actor="cli")
    with sessions.begin() as s:
        assert jobstore.unpublished(s) == []
        row = jobstore.requeue(s, job_id, actor="cli")
        assert row.state == "queued" and row.published_at is None
    with sessions() as s:
        assert [r.job_id for r in jobstore.unpublished(s)] == [job_id]


def test_malformed_messages_are_rejected_by_the_contract() -> None:
    good = AnalyzeJob(job_id="a" * 32, study_instance_uid="1.2", application="glioma", model_version="1", series={"t1c": "1.2.3"})
    data = json.loads(good.model_dump_json())
    for bad in ({**data, "surprise": 1}, {**data, "schema_version": 2}, {k: v for k, v in data.items() if k != "series"}, {**data, "job_id": "../etc"}):
        with pytest.raises(ValueError):
            AnalyzeJob.model_validate_json(json.dumps(bad))


def test_migrations_upgrade_an_older_database_with_jobs_in_it(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'old.sqlite3'}")
    migrate(engine, "0002")  # the schema of an earlier release
    with engine.begin() as c:
        c.execute(text(
            "INSERT INTO jobs (job_id, study_instance_uid, accession, application, model_version, trigger, series_json,"
            " options_json, destinations_json, state, created_at, updated_at, attempts, result_uids_json)"
            " VALUES ('0123456789abcdef0123456789abcdef', '1.2.3', '', 'glioma', '0.9', 'auto', '{\"t1c\": \"1.2.3.4\"}',"
            " '{}', '[]', 'done', 1.0, 2.0, 1, '[]')"
        ))
        c.execute(text("INSERT INTO measurements (job_id, name, value, unit, code, created_at) VALUES ('0123456789abcdef0123456789abcdef', 'whole_tumor', 12.5, 'mL', NULL, 2.0)"))
    assert "superseded_by" not in {c["name"] for c in inspect(engine).get_columns("jobs")}
    migrate(engine)  # upgrade to head keeps the data
    sessions = make_sessionmaker(engine)
    with sessions() as s:
        row = jobstore.get_job(s, "0123456789abcdef")
        assert row.state == "done" and row.series == {"t1c": "1.2.3.4"} and row.flags == []
        assert [(m.name, m.value) for m in jobstore.job_measurements(s, row.job_id)] == [("whole_tumor", 12.5)]
    assert "routing_decisions" in inspect(engine).get_table_names()
    engine.dispose()


def test_migrations_match_the_models(tmp_path: Path) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from radnode.store.db import Base

    engine = make_engine(f"sqlite:///{tmp_path / 'm.sqlite3'}")
    migrate(engine)
    with engine.connect() as c:
        assert compare_metadata(MigrationContext.configure(c), Base.metadata) == []
    engine.dispose()


def test_postgresql_store_when_available() -> None:
    """The same store on PostgreSQL (running here and on CI)."""
    import uuid

    import sqlalchemy

    admin = sqlalchemy.create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/postgres", isolation_level="AUTOCOMMIT")
    name = f"radnode_test_{uuid.uuid4().hex[:8]}"
    try:
        with admin.connect() as c:
            c.execute(text(f"CREATE DATABASE {name}"))
    except sqlalchemy.exc.OperationalError as exc:
        unavailable(f"no PostgreSQL on 127.0.0.1:5432: {exc}")
    try:
        engine = make_engine(f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}")
        migrate(engine)
        sessions = make_sessionmaker(engine)
        with sessions.begin() as s:
            job_id = jobstore.create_job(s, _request())[0].job_id
            jobstore.claim(s, job_id, "w", lease_seconds=5, take_over=False)
        with sessions() as s:
            assert jobstore.get_job(s, job_id).attempts == 1
        _two_workers_handed_the_same_job(sessions)
        engine.dispose()
    finally:
        with admin.connect() as c:
            c.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


def test_prior_measurements_are_this_patients_earlier_studies(sessions) -> None:  # type: ignore[no-untyped-def]
    def done(study: str, date: str, patient: str, wt: float) -> str:
        with sessions.begin() as s:
            row, _ = jobstore.create_job(s, jobstore.JobRequest(study, "glioma", "1", {"t1c": study + ".1"}, patient_key=patient, study_date=date))
            jobstore.claim(s, row.job_id, "w", lease_seconds=5, take_over=False)
            jobstore.transition(s, row.job_id, JobState.WRITING, actor="w")
            jobstore.add_measurements(s, row.job_id, [("whole_tumor", wt, "mL", None), ("enhancing", wt / 4, "mL", None), ("edema", 1.0, "mL", None)])
            jobstore.transition(s, row.job_id, JobState.DONE, actor="w")
            return row.job_id

    done("1.2.10", "20240101", "p1", 20.0)
    done("1.2.11", "20240301", "p1", 25.0)
    done("1.2.12", "20240201", "p2", 99.0)  # another patient
    later = done("1.2.13", "20250101", "p1", 30.0)  # after the current study
    with sessions.begin() as s:
        current, _ = jobstore.create_job(s, jobstore.JobRequest("1.2.20", "glioma", "1", {"t1c": "1.2.20.1"}, patient_key="p1", study_date="20240601"))
    with sessions() as s:
        priors = jobstore.prior_measurements(s, jobstore.get_job(s, current.job_id), ("whole_tumor", "enhancing"))
        assert later
    assert priors == [("20240101", {"whole_tumor": 20.0, "enhancing": 5.0}), ("20240301", {"whole_tumor": 25.0, "enhancing": 6.25})]


def test_work_folder_retention_keeps_results(tmp_path: Path) -> None:
    import os
    import time

    from radnode.analyzers.preprocessing import MARKER
    from radnode.composition import prune_workdirs
    from radnode.settings import Settings

    settings = Settings(data_dir=tmp_path / "data", analyzers={"keep_workdirs_days": 7})
    old, new = settings.work_dir / "job-old", settings.work_dir / "job-new"
    for job in (old, new):
        (job / "preprocessing").mkdir(parents=True)
        (job / "preprocessing" / MARKER).touch()
        (job / "preprocessing" / "t1c.nii").write_bytes(b"x")
        (job / "results").mkdir()
        (job / "results" / "seg.dcm").write_bytes(b"x")
    past = time.time() - 8 * 86400
    for f in (old / "preprocessing").iterdir():
        os.utime(f, (past, past))
    assert prune_workdirs(settings) == [old / "preprocessing"]
    assert not (old / "preprocessing").exists() and (old / "results" / "seg.dcm").exists()
    assert (new / "preprocessing" / "t1c.nii").exists()


def _open_store_in_a_process(data_dir: str, start: float) -> str:
    import time as _time

    from radnode.settings import Settings
    from radnode.store.db import open_store

    _time.sleep(max(start - _time.time(), 0))  # every process migrates at the same moment
    try:
        engine, _ = open_store(Settings(data_dir=Path(data_dir)))
        engine.dispose()
        return "ok"
    except Exception as exc:  # reported to the test, which fails on it
        return f"{type(exc).__name__}: {exc}"


def test_processes_starting_together_migrate_a_fresh_database_once(tmp_path: Path) -> None:
    """``radnode listen`` and ``radnode worker`` started at once both migrate the same new SQLite file."""
    import multiprocessing
    import time as _time

    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        start = _time.time() + 3.0  # after every worker process has imported radnode
        results = pool.starmap(_open_store_in_a_process, [(str(tmp_path / "data"), start)] * 4)
    assert results == ["ok"] * 4
    engine = make_engine(f"sqlite:///{tmp_path / 'data' / 'radnode.sqlite3'}")
    with engine.connect() as c:
        assert c.exec_driver_sql("SELECT count(*) FROM alembic_version").scalar() == 1
    engine.dispose()

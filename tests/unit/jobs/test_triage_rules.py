"""Triage (issue 16) without a broker: which applications are urgent, the
priority in the job contract and the store, the worker lanes, and the
schema revision that adds them.

The queues and workers themselves are tested against the real brokers in
``tests/queue/test_brokers.py`` and ``tests/integration/test_triage.py``.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
from sqlalchemy import text

from radnode.analyzers.registry import HEMORRHAGE, Registry, RegistryError
from radnode.jobs.lanes import Lane, plan_lanes
from radnode.model.analysis import Finding
from radnode.model.jobs import ELECTIVE_PRIORITY, URGENT_PRIORITY, AnalyzeJob
from radnode.queue.base import Delivery, HandlerResult
from radnode.queue.embedded import EmbeddedBroker
from radnode.queue.outbox import Outbox
from radnode.settings import Settings, SettingsError, load
from radnode.store import jobs as jobstore
from radnode.store.db import make_engine, make_sessionmaker, migrate

URGENT_PLUGIN = "tests.support.analyzers:UrgentCountingAnalyzer"
COUNTING_PLUGIN = "tests.support.analyzers:CountingAnalyzer"




def _registry(tmp_path: Path, **queue: object) -> Registry:
    return Registry.from_settings(Settings(data_dir=tmp_path, analyzers={"plugins": [COUNTING_PLUGIN, URGENT_PLUGIN]}, queue=queue))


# -- which applications are urgent ------------------------------------------------------


def test_hemorrhage_is_urgent_by_declaration_and_settings_override_either_way(tmp_path: Path) -> None:
    reg = _registry(tmp_path)
    assert HEMORRHAGE.urgent and reg.roles("hemorrhage").urgent
    assert reg.urgent("hemorrhage") and reg.priority("hemorrhage") == URGENT_PRIORITY  # before its analyzer exists
    assert reg.urgent("urgent-test")  # a plugin declares it in its spec
    assert not reg.urgent("glioma") and not reg.urgent("count-test") and reg.priority("glioma") == ELECTIVE_PRIORITY
    other = _registry(tmp_path, urgency={"hemorrhage": "elective", "count-test": "urgent"})
    assert not other.urgent("hemorrhage") and other.urgent("count-test") and other.urgent("urgent-test")
    assert other.priorities(["hemorrhage", "count-test"]) == {"hemorrhage": ELECTIVE_PRIORITY, "count-test": URGENT_PRIORITY}


def test_urgency_settings_are_validated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(RegistryError, match="queue.urgency names unknown application.*hemorage"):
        _registry(tmp_path, urgency={"hemorage": "urgent"})  # a typo must not leave an application elective
    for key in [k for k in os.environ if k.startswith("RADNODE_")]:
        monkeypatch.delenv(key)
    config = tmp_path / "radnode.yaml"
    config.write_text("queue:\n  urgency:\n    hemorrhage: soon\nworker:\n  urgent_concurrency: -1\n")
    with pytest.raises(SettingsError) as err:
        load(config)
    assert "queue.urgency.hemorrhage" in str(err.value) and "'urgent' or 'elective'" in str(err.value)
    assert "worker.urgent_concurrency" in str(err.value)
    config.write_text("queue:\n  urgency:\n    hemorrhage: elective\nworker:\n  urgent_concurrency: 0\n")
    settings = load(config)
    assert settings.queue.urgency == {"hemorrhage": "elective"} and settings.worker.urgent_concurrency == 0


# -- the job contract and the store ------------------------------------------------------


def _job(**kw: object) -> AnalyzeJob:
    return AnalyzeJob(job_id="0123456789abcdef", study_instance_uid="1.2.3", application="hemorrhage", model_version="1",
                      series={"ct_brain": "1.2.3.4"}, **kw)  # type: ignore[arg-type]


def test_priority_in_the_message_is_backwards_compatible() -> None:
    # A message of the previous version (no priority) parses as elective ...
    old = json.dumps({"schema_version": 1, "job_id": "0123456789abcdef", "study_instance_uid": "1.2.3", "application": "glioma",
                      "model_version": "1", "series": {"t1c": "1.2.3.4"}, "options": {}, "destinations": [], "trigger": "auto"})
    assert AnalyzeJob.model_validate_json(old).priority == ELECTIVE_PRIORITY
    # ... and an elective job's message is exactly what that version wrote (its workers reject unknown fields).
    assert json.loads(_job().model_dump_json()) == {**json.loads(old), "application": "hemorrhage", "series": {"ct_brain": "1.2.3.4"}}
    urgent = _job(priority=URGENT_PRIORITY)
    assert json.loads(urgent.model_dump_json())["priority"] == URGENT_PRIORITY
    assert AnalyzeJob.model_validate_json(urgent.model_dump_json()) == urgent
    with pytest.raises(ValueError):
        _job(priority=9)


def test_the_outbox_publishes_urgent_jobs_first_with_their_priority(sessions) -> None:  # type: ignore[no-untyped-def]
    with sessions.begin() as s:
        elective, _ = jobstore.create_job(s, jobstore.JobRequest("1.2.3", "glioma", "1", {"t1c": "1.2.3.4"}))
        urgent, _ = jobstore.create_job(s, jobstore.JobRequest("1.2.5", "hemorrhage", "1", {"ct_brain": "1.2.5.4"}, priority=URGENT_PRIORITY))
        assert [r.job_id for r in jobstore.unpublished(s)] == [urgent.job_id, elective.job_id]
    broker = EmbeddedBroker()
    assert Outbox(sessions, broker).flush() == 2
    with sessions() as s:
        assert jobstore.get_job(s, urgent.job_id).message().priority == URGENT_PRIORITY
    taken = []
    stop = threading.Event()

    def handler(d: Delivery) -> HandlerResult:
        taken.append((d.application, d.priority, AnalyzeJob.model_validate_json(d.body).priority))
        stop.set()
        return HandlerResult.ack()

    broker.consume(["glioma", "hemorrhage"], handler, stop)
    assert taken == [("hemorrhage", URGENT_PRIORITY, URGENT_PRIORITY)]


def test_findings_flag_a_job_only_when_a_critical_one_is_present(sessions) -> None:  # type: ignore[no-untyped-def]
    with sessions.begin() as s:
        job, _ = jobstore.create_job(s, jobstore.JobRequest("1.2.3", "hemorrhage", "1", {"ct_brain": "1.2.3.4"}))
        names = jobstore.record_findings(s, job.job_id, [Finding("midline shift", False, 0.1, critical=True), Finding("old infarct", True, 0.8)])
        assert names == [] and not job.critical
        names = jobstore.record_findings(s, job.job_id, [Finding("haemorrhage", True, 0.97, critical=True), Finding("old infarct", True, 0.8)])
        assert names == ["haemorrhage"] and job.critical
        assert [r.job_id for r in jobstore.list_jobs(s, critical=True)] == [job.job_id]
        jobstore.record_findings(s, job.job_id, [])  # a re-run that no longer finds it
        assert not job.critical and jobstore.list_jobs(s, critical=True) == []


def test_revision_0009_keeps_existing_jobs_and_their_measurements(tmp_path: Path) -> None:
    """Existing jobs become elective with no findings; nothing else changes (on SQLite a
    table rebuild here would cascade-delete every measurement)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'old.sqlite3'}")
    migrate(engine, "0008")
    with engine.begin() as c:
        c.execute(text(
            "INSERT INTO jobs (job_id, study_instance_uid, accession, application, model_version, trigger, series_json,"
            " options_json, destinations_json, state, created_at, updated_at, attempts, result_uids_json)"
            " VALUES ('0123456789abcdef0123456789abcdef', '1.2.3', '', 'hemorrhage', '0.9', 'auto', '{}', '{}', '[]', 'queued', 1.0, 2.0, 0, '[]')"
        ))
        c.execute(text("INSERT INTO measurements (job_id, name, value, unit, code, created_at) VALUES ('0123456789abcdef0123456789abcdef', 'volume', 3.5, 'mL', NULL, 2.0)"))
    migrate(engine)
    with make_sessionmaker(engine)() as s:
        row = jobstore.get_job(s, "0123456789abcdef")
        assert (row.priority, row.critical, row.findings, row.state) == (0, False, [], "queued")
        assert [(m.name, m.value) for m in jobstore.job_measurements(s, row.job_id)] == [("volume", 3.5)]
    engine.dispose()


# -- worker lanes --------------------------------------------------------------------------


def test_lanes_give_urgent_applications_threads_of_their_own() -> None:
    urgent = {"hemorrhage", "stroke"}.__contains__
    apps = ["glioma", "hemorrhage", "metastasis", "stroke"]
    assert plan_lanes(apps, urgent, concurrency=2, urgent_concurrency=1) == [
        Lane("elective", ("glioma", "metastasis"), 2),
        Lane("urgent", ("hemorrhage", "stroke"), 1),
    ]
    # No lane: urgent jobs share the consumers (and go first among the waiting ones).
    assert plan_lanes(apps, urgent, concurrency=2, urgent_concurrency=0) == [Lane("shared", ("hemorrhage", "stroke", "glioma", "metastasis"), 2)]
    # A worker of one kind has one lane, as many threads as it was told.
    assert plan_lanes(["hemorrhage"], urgent, concurrency=3, urgent_concurrency=1) == [Lane("urgent", ("hemorrhage",), 3)]
    assert plan_lanes(["glioma"], urgent, concurrency=3, urgent_concurrency=1) == [Lane("elective", ("glioma",), 3)]
    assert plan_lanes([], urgent, concurrency=1, urgent_concurrency=1) == []
    with pytest.raises(ValueError):
        plan_lanes(apps, urgent, concurrency=0, urgent_concurrency=1)

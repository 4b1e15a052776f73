"""Workers against the real RabbitMQ: exactly-once, crash redelivery,
poison jobs, bad input, graceful shutdown."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from radnode.store import jobs as jobstore
from radnode.queue.base import queue_name
from radnode.queue.rabbitmq import RabbitBroker
from radnode.store.db import open_store
from tests.integration.jobs_support import (
    AMQP,
    TERMINAL,
    Worker,
    add_job,
    job_state,
    node_env,
    settings_from_env,
    spool_study,
    wait_state,
)
from tests.support.rabbit import consumer_count, delete_topology, shared_broker_reachable
from tests.support.require import unavailable


@pytest.fixture
def rabbit_node(tmp_path: Path):  # type: ignore[no-untyped-def]
    if not shared_broker_reachable():
        unavailable("RabbitMQ is not reachable on 127.0.0.1:5672")
    env = node_env(tmp_path / "data", broker=True)
    settings = settings_from_env(env)
    engine, sessions = open_store(settings)
    ns = settings.queue.namespace
    yield env, settings, sessions
    engine.dispose()
    apps = ["count-test", "poison-test"]
    delete_topology(
        AMQP,
        [queue_name(a, ns) for a in apps] + [f"{ns}.dead"] + [f"{ns}.retry.{d}" for d in ("300ms",)],
        [f"{ns}.jobs", f"{ns}.dlx", f"{ns}.retry"],
    )


def test_two_worker_processes_run_each_job_exactly_once(rabbit_node, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env, settings, sessions = rabbit_node
    marker = tmp_path / "runs.txt"
    workers = [Worker(env), Worker(env)]
    try:
        queue = queue_name("count-test", settings.queue.namespace)
        deadline = time.monotonic() + 60
        while consumer_count(AMQP, queue) < 2:  # both workers are consuming
            assert time.monotonic() < deadline, "workers did not start consuming"
            time.sleep(0.2)
        job_ids = []
        for seed in range(8):
            study = spool_study(settings, tmp_path / f"s{seed}", seed)
            job_ids.append(add_job(sessions, study, "count-test", {"marker": str(marker), "sleep": 0.2}))
        rows = [wait_state(sessions, j, {"done"}, timeout=90) for j in job_ids]
    finally:
        for w in workers:
            assert w.terminate() == 0, w.text()[-3000:]
    runs = marker.read_text().split("\n")[:-1]
    assert sorted(r.split()[0] for r in runs) == sorted(job_ids)  # each once, none twice
    assert len({r.split()[1] for r in runs}) == 2  # both workers took jobs
    assert all(r.attempts == 1 for r in rows)
    with sessions() as s:
        assert all(jobstore.job_measurements(s, j)[0].value == 8 for j in job_ids)  # 4 t1c + 4 flair


def test_worker_killed_mid_job_is_redelivered_and_done_once(rabbit_node, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env, settings, sessions = rabbit_node
    marker = tmp_path / "runs.txt"
    study = spool_study(settings, tmp_path / "s", 1)
    first = Worker(env)
    job_id = add_job(sessions, study, "count-test", {"marker": str(marker), "sleep": 3})
    wait_state(sessions, job_id, {"inferring"}, timeout=60)
    first.kill()  # SIGKILL: no ack, no clean-up
    second = Worker(env)
    try:
        row = wait_state(sessions, job_id, {"done"}, timeout=90)
    finally:
        assert second.terminate() == 0
    assert row.attempts == 2
    assert marker.read_text().split() == [job_id, str(second.proc.pid)]
    with sessions() as s:
        details = [e.detail for e in jobstore.job_events(s, job_id)]
    assert any("taking over" in d for d in details)


def test_poison_job_is_dead_lettered_after_three_attempts(rabbit_node, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env, settings, sessions = rabbit_node
    study = spool_study(settings, tmp_path / "s", 2)
    worker = Worker(env)
    try:
        job_id = add_job(sessions, study, "poison-test")
        row = wait_state(sessions, job_id, {"failed"}, timeout=60)
        good = add_job(sessions, study, "count-test")  # the worker is still serving
        wait_state(sessions, good, {"done"}, timeout=60)
    finally:
        assert worker.terminate() == 0
    assert row.attempts == 3
    assert "poisoned analyzer" in (row.error or "") and "after 3 attempts" in (row.error or "")
    broker = RabbitBroker(AMQP, namespace=settings.queue.namespace)
    try:
        dead = broker.dead_letters()
    finally:
        broker.close()
    assert [d.message_id for d in dead] == [job_id]
    assert "poisoned analyzer" in str(dead[0].headers.get("x-radnode-reason"))


def test_bad_input_fails_with_a_clear_reason_and_the_worker_survives(rabbit_node, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env, settings, sessions = rabbit_node
    study = spool_study(settings, tmp_path / "s", 3)
    broker = RabbitBroker(AMQP, namespace=settings.queue.namespace, applications=["count-test"])
    worker = Worker(env)
    try:
        broker.publish("count-test", b'{"schema_version": 1, "job_id": "nonsense"', "garbage-1")
        broker.publish("count-test", b'{"schema_version": 7}', "garbage-2")
        # Inputs that vanished from the spool.
        vanished = add_job(sessions, study, "count-test")
        import shutil

        shutil.rmtree(settings.spool_dir / study.study_instance_uid / study.by_label("flair").series_instance_uid)
        row = wait_state(sessions, vanished, TERMINAL, timeout=60)
        assert row.state == "failed" and "no longer in the spool" in (row.error or "")
        # Options the analyzer does not know.
        study2 = spool_study(settings, tmp_path / "s2", 4)
        bad_opts = add_job(sessions, study2, "count-test", {"colour": "blue"})
        row = wait_state(sessions, bad_opts, TERMINAL, timeout=60)
        assert row.state == "failed" and "invalid options" in (row.error or "")
        ok = add_job(sessions, spool_study(settings, tmp_path / "s3", 5), "count-test")
        wait_state(sessions, ok, {"done"}, timeout=60)
        dead = {d.message_id: d for d in broker.dead_letters()}
        assert {"garbage-1", "garbage-2", vanished, bad_opts} <= set(dead)
        assert "malformed job message" in str(dead["garbage-1"].headers.get("x-radnode-reason"))
        assert job_state(sessions, ok).attempts == 1
    finally:
        broker.close()
        assert worker.terminate() == 0


def test_sigterm_lets_the_running_job_finish(rabbit_node, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env, settings, sessions = rabbit_node
    study = spool_study(settings, tmp_path / "s", 6)
    worker = Worker(env)
    job_id = add_job(sessions, study, "count-test", {"sleep": 2})
    wait_state(sessions, job_id, {"inferring"}, timeout=60)
    started = time.monotonic()
    assert worker.terminate(timeout=60) == 0
    assert time.monotonic() - started >= 1.0  # it waited for the job
    assert job_state(sessions, job_id).state == "done"

"""Triage (issue 16) through real workers on both brokers: a long elective
job never delays an urgent one, and an urgent job published behind a
backlog of elective ones runs next.

Embedded: the worker pool, outbox and in-process queue that ``radnode
serve`` runs, in this process. RabbitMQ: a ``radnode worker`` process on the
shared broker (its own outbox publishes the jobs this test commits). The
elective job is "long" because it waits for a gate file the test creates
when it chooses, so every assertion is about order, none about time.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from radnode.analyzers.registry import Registry
from radnode.composition import WorkerPool, broker_for, make_outbox
from radnode.model.jobs import ELECTIVE_PRIORITY, URGENT_PRIORITY
from radnode.queue.base import queue_name
from radnode.queue.rabbitmq import RabbitBroker
from radnode.store import jobs as jobstore
from radnode.store.db import open_store
from tests.integration.jobs_support import AMQP, Worker, job_state, node_env, settings_from_env, spool_study, wait_state
from tests.support.rabbit import consumer_count, delete_topology, shared_broker_reachable
from tests.support.require import unavailable

PLUGINS = ["tests.support.analyzers:CountingAnalyzer", "tests.support.analyzers:UrgentCountingAnalyzer"]
ELECTIVE, URGENT = "count-test", "urgent-test"


def _wait(pred: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


class Node:
    """Workers serving an elective and an urgent application, and the store the test writes jobs into."""

    def __init__(self, kind: str, tmp_path: Path, *, urgent_concurrency: int) -> None:
        self.kind = kind
        self.tmp_path = tmp_path
        self.env = node_env(
            tmp_path / "data",
            broker=kind == "rabbit",
            RADNODE_ANALYZERS__PLUGINS=json.dumps(PLUGINS),
            RADNODE_WORKER__CONCURRENCY="1",
            RADNODE_WORKER__URGENT_CONCURRENCY=str(urgent_concurrency),
        )
        self.settings = settings_from_env(self.env)
        self.engine, self.sessions = open_store(self.settings)
        self.registry = Registry.from_settings(self.settings)
        self.namespace = self.settings.queue.namespace
        self.seeds = iter(range(1000))
        self.worker: Worker | None = None
        self.pool: WorkerPool | None = None
        if kind == "embedded":
            self.broker = broker_for(self.settings, [ELECTIVE, URGENT], self.registry)
            self.outbox = make_outbox(self.settings, self.sessions, self.broker)
            self.pool = WorkerPool(self.settings, self.sessions, self.broker, self.registry, [ELECTIVE, URGENT], 1)
            self.outbox.start()
            self.pool.start()
        else:
            self.worker = Worker(self.env, apps=f"{ELECTIVE},{URGENT}")
            self.broker = RabbitBroker(AMQP, namespace=self.namespace)  # the test's view of the queues
            for app in (ELECTIVE, URGENT):
                _wait(lambda app=app: consumer_count(AMQP, queue_name(app, self.namespace)) >= 1, f"the worker never consumed {app}")

    def add(self, app: str, **options: Any) -> str:
        """A job for a newly spooled study, as the router would create it."""
        seed = next(self.seeds)
        study = spool_study(self.settings, self.tmp_path / "studies" / str(seed), seed)
        series = {"t1c": study.by_label("t1c").series_instance_uid, "flair": study.by_label("flair").series_instance_uid}
        request = jobstore.JobRequest(study.study_instance_uid, app, "1.0", series, options=options, priority=self.registry.priority(app))
        with self.sessions.begin() as s:
            row, _ = jobstore.create_job(s, request)
            job_id = row.job_id
        if self.kind == "embedded":
            self.outbox.kick()
        return job_id

    def published(self, job_id: str) -> bool:
        return job_state(self.sessions, job_id).published_at is not None

    def close(self) -> None:
        try:
            if self.pool is not None:
                self.pool.stop(deadline=30)
                self.outbox.stop()
            if self.worker is not None:
                assert self.worker.terminate() == 0, self.worker.text()[-3000:]
        finally:
            self.broker.close()
            self.engine.dispose()
            if self.kind == "rabbit":
                ns = self.namespace
                delete_topology(AMQP, [queue_name(a, ns) for a in (ELECTIVE, URGENT)] + [f"{ns}.dead", f"{ns}.retry.300ms"],
                                [f"{ns}.jobs", f"{ns}.dlx", f"{ns}.retry"])


@pytest.fixture(params=["embedded", "rabbit"])
def kind(request: pytest.FixtureRequest) -> str:
    if request.param == "rabbit" and not shared_broker_reachable():
        unavailable("RabbitMQ is not reachable on 127.0.0.1:5672")
    return str(request.param)


@pytest.fixture
def lane_node(kind: str, tmp_path: Path) -> Iterator[Node]:
    node = Node(kind, tmp_path, urgent_concurrency=1)
    yield node
    node.close()


@pytest.fixture
def shared_node(kind: str, tmp_path: Path) -> Iterator[Node]:
    node = Node(kind, tmp_path, urgent_concurrency=0)
    yield node
    node.close()


def _finish_order(marker: Path) -> list[str]:
    return [line.split()[0] for line in marker.read_text().splitlines()] if marker.exists() else []


def test_an_urgent_job_finishes_while_a_long_elective_job_runs(lane_node: Node, tmp_path: Path) -> None:
    """One elective consumer busy with a long glioma-like job and two more
    elective jobs waiting: the urgent job runs in the urgent lane beside it."""
    node = lane_node
    gate, marker = tmp_path / "gate", tmp_path / "finished.txt"
    long_job = node.add(ELECTIVE, gate=str(gate), marker=str(marker))
    wait_state(node.sessions, long_job, {"inferring"}, timeout=90)
    waiting = [node.add(ELECTIVE, marker=str(marker)) for _ in range(2)]
    urgent = node.add(URGENT, marker=str(marker))

    done = wait_state(node.sessions, urgent, {"done"}, timeout=90)
    # The elective job cannot have finished (its gate is shut) and the waiting ones have not started.
    assert job_state(node.sessions, long_job).state == "inferring"
    assert [job_state(node.sessions, j).state for j in waiting] == ["queued", "queued"]
    assert _finish_order(marker) == [urgent]

    gate.touch()
    rows = [wait_state(node.sessions, j, {"done"}, timeout=90) for j in [long_job, *waiting]]
    assert _finish_order(marker) == [urgent, long_job, *waiting]
    assert (done.priority, rows[0].priority) == (URGENT_PRIORITY, ELECTIVE_PRIORITY)
    assert all(r.attempts == 1 for r in [done, *rows])


def test_an_urgent_job_published_behind_a_backlog_runs_next(shared_node: Node, tmp_path: Path) -> None:
    """Without an urgent lane (``worker.urgent_concurrency: 0``) one consumer
    serves both applications: several elective jobs are queued and the
    urgent one, published last, is still the next to run."""
    node = shared_node
    gate, marker = tmp_path / "gate", tmp_path / "finished.txt"
    running = node.add(ELECTIVE, gate=str(gate), marker=str(marker))
    wait_state(node.sessions, running, {"inferring"}, timeout=90)
    backlog = [node.add(ELECTIVE, marker=str(marker)) for _ in range(3)]
    _wait(lambda: all(node.published(j) for j in backlog), "the elective backlog was never published")
    urgent = node.add(URGENT, marker=str(marker))
    _wait(lambda: node.published(urgent), "the urgent job was never published")
    if node.kind == "rabbit":
        # Delivered to the busy worker before its running job ends (not waiting in the queue any more).
        _wait(lambda: node.broker.queue_depth(URGENT) == 0, "the urgent job never reached the worker")
    assert job_state(node.sessions, urgent).state == "queued"

    gate.touch()
    for j in [running, urgent, *backlog]:
        wait_state(node.sessions, j, {"done"}, timeout=90)
    assert _finish_order(marker) == [running, urgent, *backlog]


def test_the_pool_puts_urgent_applications_in_a_lane_of_their_own(tmp_path: Path) -> None:
    """What ``radnode worker`` and ``radnode serve`` start: the lanes follow the settings."""
    env = node_env(tmp_path / "data", broker=False, RADNODE_ANALYZERS__PLUGINS=json.dumps(PLUGINS),
                   RADNODE_QUEUE__URGENCY=json.dumps({ELECTIVE: "urgent", URGENT: "elective"}))
    settings = settings_from_env(env)
    engine, sessions = open_store(settings)
    try:
        registry = Registry.from_settings(settings)
        pool = WorkerPool(settings, sessions, broker_for(settings), registry, [ELECTIVE, URGENT, "hemorrhage"], 2)
        assert [(lane.name, lane.applications, lane.threads) for lane in pool.lanes] == [
            ("elective", (URGENT,), 2),
            ("urgent", (ELECTIVE, "hemorrhage"), 1),
        ]
        assert registry.priority(ELECTIVE) == URGENT_PRIORITY and registry.priority(URGENT) == ELECTIVE_PRIORITY
    finally:
        engine.dispose()

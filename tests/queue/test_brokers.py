"""Behaviour of both broker implementations (embedded and RabbitMQ).

Why the same tests for both: the rest of radnode only sees the ``Broker``
protocol and a node may run on either, so the semantics the router and the
workers rely on — exactly-one consumer per message, retry with attempt + 1
after a delay, dead letters with a reason, redelivery after a consumer dies —
must hold for both. RabbitMQ-only failures (a consumer *process* killed with
SIGKILL, a broker restart) are tested against a real broker. No mocks.

Every RabbitMQ test runs in its own topology namespace on the shared broker
and deletes it afterwards, so parallel runs never interfere.
"""

from __future__ import annotations

import json
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pika
import pytest

from radnode.queue.base import (
    APPLICATION_HEADER,
    ATTEMPT_HEADER,
    REASON_HEADER,
    BrokerUnavailable,
    Delivery,
    HandlerResult,
    UnroutableMessage,
    legacy_queue_name,
    queue_name,
)
from radnode.model.jobs import MAX_PRIORITY, URGENT_PRIORITY
from radnode.queue.embedded import EmbeddedBroker
from radnode.queue.factory import make_broker
from radnode.queue.rabbitmq import RabbitBroker
from tests.support.rabbit import (
    SHARED_URL,
    RabbitInstance,
    consumer_count,
    delete_topology,
    shared_broker_reachable,
)
from tests.support.require import unavailable

REPO = Path(__file__).resolve().parents[2]
DELAY = 0.2


def wait_until(pred: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return pred()


def require_rabbit() -> None:
    if not shared_broker_reachable():
        unavailable(f"RabbitMQ not reachable at {SHARED_URL}")


class Env:
    """One test's brokers, consumers and topology (torn down at the end)."""

    def __init__(self, kind: str, url: str = SHARED_URL) -> None:
        self.kind = kind
        self.url = url
        self.namespace = f"t{uuid.uuid4().hex[:10]}"
        self.app = f"app{uuid.uuid4().hex[:6]}"
        self.apps: set[str] = {self.app}
        self.brokers: list[Any] = []
        self.consumers: list[tuple[threading.Thread, threading.Event, list[BaseException]]] = []
        self._embedded: EmbeddedBroker | None = None

    def broker(self, **kw: Any) -> Any:
        """A broker on this test's topology; embedded: one shared instance
        (it is in-process), RabbitMQ: a new client (own connections)."""
        kw.setdefault("retry_delays", (DELAY,))
        if self.kind == "embedded":
            if self._embedded is None:
                self._embedded = EmbeddedBroker(**kw)
                self.brokers.append(self._embedded)
            return self._embedded
        b = RabbitBroker(self.url, namespace=self.namespace, **kw)
        self.brokers.append(b)
        return b

    def start_consumer(self, broker: Any, handler: Any, apps: list[str] | None = None) -> tuple[threading.Thread, threading.Event, list[BaseException]]:
        stop = threading.Event()
        errors: list[BaseException] = []
        apps = apps or [self.app]
        self.apps.update(apps)

        def run() -> None:
            try:
                broker.consume(apps, handler, stop)
            except BaseException as exc:  # noqa: BLE001 - recorded for the test
                errors.append(exc)

        t = threading.Thread(target=run, daemon=True)
        t.start()
        entry = (t, stop, errors)
        self.consumers.append(entry)
        return entry

    def wait_consumers(self, n: int, app: str | None = None) -> None:
        if self.kind == "rabbit":
            q = queue_name(app or self.app, self.namespace)
            assert wait_until(lambda: consumer_count(self.url, q) >= n, 15), f"{n} consumers never attached"

    def teardown(self) -> None:
        for _, stop, _ in self.consumers:
            stop.set()
        for t, _, _ in self.consumers:
            t.join(10)
        for b in self.brokers:
            b.close()
        if self.kind == "rabbit":
            retry_queues = sorted({q for b in self.brokers for q in b.retry_queue_names})
            ns = self.namespace
            delete_topology(
                self.url,
                [queue_name(a, ns) for a in self.apps] + [legacy_queue_name(a, ns) for a in self.apps] + retry_queues + [f"{ns}.dead"],
                [f"{ns}.jobs", f"{ns}.retry", f"{ns}.dlx"],
            )


@pytest.fixture(params=["embedded", "rabbit"])
def env(request: pytest.FixtureRequest) -> Iterator[Env]:
    if request.param == "rabbit":
        require_rabbit()
    e = Env(request.param)
    yield e
    e.teardown()


@pytest.fixture
def renv() -> Iterator[Env]:
    require_rabbit()
    e = Env("rabbit")
    yield e
    e.teardown()


def body(**kw: Any) -> bytes:
    return json.dumps(kw).encode()


# -- both implementations -----------------------------------------------------


def test_each_message_is_handled_exactly_once_by_two_consumers(env: Env) -> None:
    producer = env.broker()
    producer.declare([env.app])
    seen: list[tuple[str, str]] = []
    lock = threading.Lock()

    def handler_for(name: str) -> Any:
        def handler(d: Delivery) -> HandlerResult:
            time.sleep(0.01)
            with lock:
                seen.append((name, d.message_id))
            return HandlerResult.ack()

        return handler

    env.start_consumer(env.broker(), handler_for("c1"))
    env.start_consumer(env.broker(), handler_for("c2"))
    env.wait_consumers(2)
    ids = [f"m{i}" for i in range(40)]
    for mid in ids:
        producer.publish(env.app, body(n=mid), mid)
    assert wait_until(lambda: len(seen) >= len(ids), 15)
    time.sleep(0.2)  # a duplicate would show up now
    counts = Counter(mid for _, mid in seen)
    assert sorted(counts) == sorted(ids)
    assert set(counts.values()) == {1}
    assert {name for name, _ in seen} == {"c1", "c2"}, "both consumers should have worked"
    assert producer.queue_depth(env.app) == 0


def test_retry_comes_back_with_next_attempt_then_dead_letters(env: Env) -> None:
    broker = env.broker(max_attempts=3)
    broker.declare([env.app])
    calls: list[tuple[int, float, bool]] = []

    def handler(d: Delivery) -> HandlerResult:
        calls.append((d.attempt, time.monotonic(), d.redelivered))
        return HandlerResult.retry("model busy")

    env.start_consumer(broker, handler)
    broker.publish(env.app, body(x=1), "job-1")
    assert wait_until(lambda: len(broker.dead_letters()) == 1, 10)
    assert [a for a, _, _ in calls] == [1, 2, 3]
    gaps = [b - a for (_, a, _), (_, b, _) in zip(calls, calls[1:])]
    assert all(g >= DELAY * 0.9 for g in gaps), gaps
    assert all(g < DELAY + 2.0 for g in gaps), gaps
    assert not any(r for _, _, r in calls)
    [dead] = broker.dead_letters()
    assert dead.message_id == "job-1"
    assert dead.application == env.app
    assert dead.attempt == 3
    assert "model busy" in str(dead.headers[REASON_HEADER])
    assert dead.headers[APPLICATION_HEADER] == env.app
    assert json.loads(dead.body) == {"x": 1}
    # reading dead letters leaves them in place; purging empties
    assert len(broker.dead_letters()) == 1
    assert broker.purge_dead_letters() == 1
    assert broker.dead_letters() == []


def test_dead_outcome_dead_letters_at_once_with_reason(env: Env) -> None:
    broker = env.broker()
    broker.declare([env.app])
    env.start_consumer(broker, lambda d: HandlerResult.dead("not an MR study"))
    broker.publish(env.app, body(), "job-d")
    assert wait_until(lambda: len(broker.dead_letters()) == 1, 10)
    [dead] = broker.dead_letters()
    assert (dead.message_id, dead.attempt, dead.headers[REASON_HEADER]) == ("job-d", 1, "not an MR study")


def test_handler_exception_counts_as_retry_and_consumer_keeps_running(env: Env) -> None:
    broker = env.broker()
    broker.declare([env.app])
    calls: list[tuple[str, int]] = []

    def handler(d: Delivery) -> HandlerResult:
        calls.append((d.message_id, d.attempt))
        if d.message_id == "boom" and d.attempt == 1:
            raise ValueError("segmentation model crashed")
        return HandlerResult.ack()

    env.start_consumer(broker, handler)
    broker.publish(env.app, body(), "boom")
    broker.publish(env.app, body(), "fine")
    assert wait_until(lambda: ("boom", 2) in calls and ("fine", 1) in calls, 10)
    time.sleep(0.3)
    assert sorted(calls) == [("boom", 1), ("boom", 2), ("fine", 1)]
    assert broker.dead_letters() == []
    assert all(t.is_alive() for t, _, _ in env.consumers)


def test_malformed_messages_do_not_crash_the_consumer(env: Env) -> None:
    broker = env.broker()
    broker.declare([env.app])
    outcomes: list[tuple[str, str]] = []

    def handler(d: Delivery) -> HandlerResult:
        try:
            json.loads(d.body)
        except ValueError as exc:
            outcomes.append((d.message_id, "dead"))
            return HandlerResult.dead(f"malformed body: {exc}")
        outcomes.append((d.message_id, "ok"))
        return HandlerResult.ack()

    env.start_consumer(broker, handler)
    broker.publish(env.app, b"\xff\xfe not json", "bad-body")
    if env.kind == "rabbit":
        # A foreign publisher: no message id, garbage attempt header, no content type.
        conn = pika.BlockingConnection(pika.URLParameters(env.url))
        try:
            ch = conn.channel()
            ch.confirm_delivery()
            ch.basic_publish(f"{env.namespace}.jobs", env.app, b"{}",
                             pika.BasicProperties(headers={ATTEMPT_HEADER: "abc", "x-odd": [1, {"a": b"\x00"}]}),
                             mandatory=True)
        finally:
            conn.close()
    broker.publish(env.app, body(ok=True), "good")
    assert wait_until(lambda: ("good", "ok") in outcomes, 10)
    assert ("bad-body", "dead") in outcomes
    if env.kind == "rabbit":
        assert ("", "ok") in outcomes
    assert all(t.is_alive() for t, _, _ in env.consumers)


def test_consumer_that_dies_mid_job_gets_its_message_redelivered(env: Env) -> None:
    broker = env.broker()
    broker.declare([env.app])
    first: list[Delivery] = []
    second: list[Delivery] = []

    def dying(d: Delivery) -> HandlerResult:
        first.append(d)
        raise SystemExit("worker killed")

    t1, _, errors = env.start_consumer(env.broker(), dying)
    env.wait_consumers(1)
    broker.publish(env.app, body(), "job-x")
    assert wait_until(lambda: not t1.is_alive(), 10)
    assert [type(e) for e in errors] == [SystemExit]

    def healthy(d: Delivery) -> HandlerResult:
        second.append(d)
        return HandlerResult.ack()

    env.start_consumer(env.broker(), healthy)
    assert wait_until(lambda: len(second) == 1, 10)
    time.sleep(0.3)
    assert [d.message_id for d in first] == ["job-x"] and not first[0].redelivered
    assert [(d.message_id, d.redelivered, d.attempt) for d in second] == [("job-x", True, 1)]


def test_latency_publish_to_handler_start(env: Env, record_property: Any) -> None:
    broker = env.broker()
    broker.declare([env.app])
    started: dict[str, float] = {}
    arrived = threading.Event()

    def handler(d: Delivery) -> HandlerResult:
        started[d.message_id] = time.perf_counter()
        arrived.set()
        return HandlerResult.ack()

    env.start_consumer(env.broker(), handler)
    env.wait_consumers(1)
    latencies = []
    for i in range(50):
        arrived.clear()
        t0 = time.perf_counter()
        broker.publish(env.app, body(i=i), f"l{i}")
        assert arrived.wait(5)
        latencies.append(started[f"l{i}"] - t0)
    median = statistics.median(latencies)
    record_property("median_latency_ms", round(median * 1000, 3))
    print(f"\n{env.kind}: publish→handler-start median {median * 1000:.2f} ms, max {max(latencies) * 1000:.2f} ms")
    assert median < 0.1


def test_unknown_application(env: Env) -> None:
    broker = env.broker()
    broker.declare([env.app])
    handled: list[str] = []
    env.start_consumer(broker, lambda d: handled.append(d.message_id) or HandlerResult.ack())
    other = f"nobody{uuid.uuid4().hex[:6]}"
    if env.kind == "rabbit":
        with pytest.raises(UnroutableMessage):
            broker.publish(other, body(), "lost?")
        assert isinstance(UnroutableMessage("x"), BrokerUnavailable)  # the outbox keeps the job
    else:
        broker.publish(other, body(), "kept")  # kept until a consumer for it comes
        assert broker.queue_depth(other) == 1
    broker.publish(env.app, body(), "after")
    assert wait_until(lambda: handled == ["after"], 10)
    assert all(t.is_alive() for t, _, _ in env.consumers)


# -- priorities (triage, issue 16) ---------------------------------------------------


def test_an_urgent_message_overtakes_those_waiting_in_its_queue(env: Env) -> None:
    producer = env.broker()
    producer.declare([env.app])
    for i in range(3):
        producer.publish(env.app, body(i=i), f"elective-{i}")
    producer.publish(env.app, body(), "urgent", priority=URGENT_PRIORITY)
    order: list[tuple[str, int]] = []
    env.start_consumer(env.broker(), lambda d: order.append((d.message_id, d.priority)) or HandlerResult.ack())
    assert wait_until(lambda: len(order) == 4, 10)
    assert order == [("urgent", URGENT_PRIORITY), ("elective-0", 0), ("elective-1", 0), ("elective-2", 0)]


def test_a_consumer_of_several_queues_takes_the_urgent_message_next(env: Env) -> None:
    """A consumer busy with one elective job, elective jobs of another
    application waiting, an urgent one published last: the urgent one runs
    next. (On RabbitMQ the consumer already holds a waiting elective message
    — prefetch is per queue — and must still pick the urgent one.)"""
    busy_app, urgent_app = f"busy{uuid.uuid4().hex[:6]}", f"urg{uuid.uuid4().hex[:6]}"
    env.apps.update({busy_app, urgent_app})
    producer = env.broker()
    producer.declare([env.app, busy_app, urgent_app])
    running, release = threading.Event(), threading.Event()
    order: list[str] = []

    def handler(d: Delivery) -> HandlerResult:
        order.append(d.message_id)
        if d.message_id == "running":
            running.set()
            release.wait(10)
        return HandlerResult.ack()

    env.start_consumer(env.broker(), handler, apps=[env.app, busy_app, urgent_app])
    for app in (env.app, busy_app, urgent_app):
        env.wait_consumers(1, app)
    producer.publish(busy_app, body(), "running")
    assert running.wait(10)
    for i in range(3):
        producer.publish(env.app, body(i=i), f"waiting-{i}")
    producer.publish(urgent_app, body(), "urgent", priority=URGENT_PRIORITY)
    if env.kind == "rabbit":
        # Both delivered to the busy consumer (no longer ready) before the running job ends.
        assert wait_until(lambda: producer.queue_depth(urgent_app) == 0 and producer.queue_depth(env.app) == 2, 10)
    release.set()
    assert wait_until(lambda: len(order) == 5, 10)
    assert order == ["running", "urgent", "waiting-0", "waiting-1", "waiting-2"]


def test_a_retried_message_keeps_its_priority(env: Env) -> None:
    broker = env.broker()
    broker.declare([env.app])
    seen: list[tuple[int, int]] = []

    def handler(d: Delivery) -> HandlerResult:
        seen.append((d.attempt, d.priority))
        return HandlerResult.retry("model busy") if d.attempt == 1 else HandlerResult.ack()

    env.start_consumer(broker, handler)
    broker.publish(env.app, body(), "again", priority=URGENT_PRIORITY)
    assert wait_until(lambda: len(seen) == 2, 10)
    assert seen == [(1, URGENT_PRIORITY), (2, URGENT_PRIORITY)]


def test_priorities_outside_the_range_are_refused(env: Env) -> None:
    broker = env.broker()
    broker.declare([env.app])
    for bad in (-1, MAX_PRIORITY + 1, True, 1.5):
        with pytest.raises(ValueError, match="priority"):
            broker.publish(env.app, body(), "bad", priority=bad)
    assert broker.queue_depth(env.app) == 0


# -- embedded only -------------------------------------------------------------


def test_embedded_simulated_crash_redelivers_to_another_consumer() -> None:
    broker = EmbeddedBroker(retry_delays=(DELAY,))
    entered = threading.Event()
    release = threading.Event()
    handled: list[tuple[str, bool, str]] = []

    def slow(d: Delivery) -> HandlerResult:
        handled.append((d.message_id, d.redelivered, "slow"))
        entered.set()
        release.wait(5)
        return HandlerResult.ack()

    stop = threading.Event()
    errors: list[BaseException] = []

    def run(handler: Any) -> threading.Thread:
        def target() -> None:
            try:
                broker.consume(["a"], handler, stop)
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        t = threading.Thread(target=target, daemon=True)
        t.start()
        return t

    t1 = run(slow)
    broker.publish("a", b"{}", "m1")
    assert entered.wait(5)
    broker.simulate_crash()
    t2 = run(lambda d: handled.append((d.message_id, d.redelivered, "other")) or HandlerResult.ack())
    release.set()
    t1.join(5)
    assert not t1.is_alive() and type(errors[0]).__name__ == "SimulatedCrash"
    assert wait_until(lambda: len(handled) == 2, 5)
    assert handled == [("m1", False, "slow"), ("m1", True, "other")]
    stop.set()
    t2.join(5)


def test_factory_picks_the_implementation() -> None:
    assert isinstance(make_broker(None, max_attempts=2, prefetch=4), EmbeddedBroker)
    assert isinstance(make_broker(""), EmbeddedBroker)
    b = make_broker("amqp://guest:guest@127.0.0.1:5672/%2F", max_attempts=5)
    assert isinstance(b, RabbitBroker) and b.max_attempts == 5
    b.close()
    with pytest.raises(ValueError):
        make_broker("redis://localhost")


# -- RabbitMQ only -----------------------------------------------------------------


def _consumer_process(env: Env, out: Path, sleep: float = 0.0) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.support.rabbit", "consume", "--url", env.url, "--namespace",
         env.namespace, "--app", env.app, "--out", str(out), "--sleep", str(sleep)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _read_events(path: Path) -> list[tuple[str, str, bool]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        kind, mid, red = line.split()
        out.append((kind, mid, red == "1"))
    return out


def test_rabbit_two_consumer_processes_handle_each_message_once(renv: Env, tmp_path: Path) -> None:
    producer = renv.broker()
    producer.declare([renv.app])
    files = [tmp_path / "p1.log", tmp_path / "p2.log"]
    procs = [_consumer_process(renv, f, sleep=0.01) for f in files]
    try:
        renv.wait_consumers(2)
        ids = [f"p{i}" for i in range(40)]
        for mid in ids:
            producer.publish(renv.app, body(), mid)

        def done() -> list[str]:
            return [m for f in files for k, m, _ in _read_events(f) if k == "done"]

        assert wait_until(lambda: len(done()) >= len(ids), 20)
        time.sleep(0.3)
        counts = Counter(done())
        assert sorted(counts) == sorted(ids) and set(counts.values()) == {1}
        assert all(any(k == "done" for k, _, _ in _read_events(f)) for f in files), "both processes worked"
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)


def test_rabbit_sigkilled_consumer_process_job_is_redelivered(renv: Env, tmp_path: Path) -> None:
    producer = renv.broker()
    producer.declare([renv.app])
    out = tmp_path / "victim.log"
    victim = _consumer_process(renv, out, sleep=30)
    try:
        renv.wait_consumers(1)
        producer.publish(renv.app, body(), "job-k")
        assert wait_until(lambda: ("start", "job-k", False) in _read_events(out), 10)
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait(10)
    handled: list[Delivery] = []
    renv.start_consumer(renv.broker(), lambda d: handled.append(d) or HandlerResult.ack())
    assert wait_until(lambda: len(handled) == 1, 10)
    time.sleep(0.3)
    assert [(d.message_id, d.redelivered) for d in handled] == [("job-k", True)]
    assert producer.queue_depth(renv.app) == 0


def test_rabbit_long_job_outlives_heartbeat_timeout(renv: Env) -> None:
    """Heartbeats must flow while a handler runs longer than 2 heartbeat intervals."""
    broker = renv.broker(heartbeat=1)
    broker.declare([renv.app])
    calls: list[Delivery] = []

    def slow(d: Delivery) -> HandlerResult:
        calls.append(d)
        time.sleep(3.5)
        return HandlerResult.ack()

    _, stop, _ = renv.start_consumer(broker, slow)
    broker.publish(renv.app, body(), "long")
    assert wait_until(lambda: len(calls) == 1, 10)
    time.sleep(3.5 + 1.5)  # a dropped connection would redeliver within this
    stop.set()
    renv.consumers[0][0].join(10)
    assert [(d.message_id, d.redelivered) for d in calls] == [("long", False)]
    assert broker.queue_depth(renv.app) == 0  # acked: closing did not requeue it


def _queue_info(url: str, queue: str) -> tuple[int, int] | None:
    """(ready messages, consumers) of *queue*, or None when it does not exist."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        try:
            frame = conn.channel().queue_declare(queue, passive=True)
        except pika.exceptions.ChannelClosedByBroker as exc:
            assert exc.reply_code == 404
            return None
        return int(frame.method.message_count), int(frame.method.consumer_count)
    finally:
        conn.close()


def test_rabbit_moves_a_legacy_queue_into_the_priority_queue(renv: Env) -> None:
    """An upgraded deployment: its application queue was declared without
    priorities, holds jobs, and a worker of the previous version still
    consumes it. The new version moves the jobs (keeping a redelivery known),
    stops new jobs from landing there, and deletes it once it is unused."""
    ns, app = renv.namespace, renv.app
    legacy = legacy_queue_name(app, ns)
    conn = pika.BlockingConnection(pika.URLParameters(renv.url))
    try:
        ch = conn.channel()
        # The previous version's topology, declared as it declared it.
        ch.exchange_declare(f"{ns}.jobs", "direct", durable=True)
        ch.exchange_declare(f"{ns}.dlx", "fanout", durable=True)
        ch.queue_declare(legacy, durable=True, arguments={"x-dead-letter-exchange": f"{ns}.dlx"})
        ch.queue_bind(legacy, f"{ns}.jobs", routing_key=app)
        ch.confirm_delivery()
        for mid in ("old-1", "old-2", "old-3"):
            props = pika.BasicProperties(message_id=mid, delivery_mode=2, headers={ATTEMPT_HEADER: 1})
            ch.basic_publish(f"{ns}.jobs", app, body(m=mid), props, mandatory=True)
        # Why a new name: RabbitMQ refuses the priority argument on the old one.
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
            conn.channel().queue_declare(legacy, durable=True, arguments={"x-dead-letter-exchange": f"{ns}.dlx", "x-max-priority": MAX_PRIORITY})
        assert refused.value.reply_code == 406
        # A worker of the previous version is running old-1 (unacknowledged).
        old_worker = conn.channel()
        old_worker.basic_qos(prefetch_count=1)
        held: list[str] = []
        old_worker.basic_consume(legacy, lambda _c, _m, p, _b: held.append(p.message_id))
        deadline = time.monotonic() + 10
        while not held and time.monotonic() < deadline:
            conn.process_data_events(time_limit=0.1)
        assert held == ["old-1"]

        first = renv.broker(priorities={app: URGENT_PRIORITY})
        first.declare([app])
        assert first.queue_depth(app) == 2  # old-2 and old-3 moved
        assert _queue_info(renv.url, legacy) == (0, 1)  # kept: still in use
        first.publish(app, body(), "new")
        assert first.queue_depth(app) == 3 and _queue_info(renv.url, legacy) == (0, 1)  # unbound: nothing new lands there
        old_worker.close()  # the old worker stops: old-1 goes back to the legacy queue, redelivered
        assert wait_until(lambda: _queue_info(renv.url, legacy) == (1, 0), 10)
    finally:
        conn.close()

    second = renv.broker(priorities={app: URGENT_PRIORITY})  # the next start of a new-version process
    second.declare([app])
    assert _queue_info(renv.url, legacy) is None
    assert second.queue_depth(app) == 4
    handled: list[Delivery] = []
    renv.start_consumer(renv.broker(), lambda d: handled.append(d) or HandlerResult.ack())
    assert wait_until(lambda: len(handled) == 4, 10)
    assert [(d.message_id, d.priority, d.redelivered) for d in handled] == [
        ("old-2", URGENT_PRIORITY, False),
        ("old-3", URGENT_PRIORITY, False),
        ("old-1", URGENT_PRIORITY, True),  # the claim may take over a job whose old worker died
        ("new", 0, False),
    ]


@pytest.mark.slow
def test_rabbit_broker_restart_loses_nothing(tmp_path: Path) -> None:
    with RabbitInstance(tmp_path / "rabbit") as inst:
        env = Env("rabbit", url=inst.url)
        try:
            producer = env.broker(connect_timeout=1, publish_retry_seconds=1.0)
            producer.declare([env.app])
            handled: list[str] = []
            lock = threading.Lock()

            def handler(d: Delivery) -> HandlerResult:
                time.sleep(0.3)  # slow enough that the queue still holds jobs at the stop
                with lock:
                    handled.append(d.message_id)
                return HandlerResult.ack()

            env.start_consumer(env.broker(connect_timeout=1), handler)
            ids = [f"before{i}" for i in range(20)]
            for mid in ids:
                producer.publish(env.app, body(), mid)
            assert wait_until(lambda: len(handled) >= 3, 10)

            inst.stop()
            with lock:
                handled_before_stop = set(handled)
            waiting = set(ids) - handled_before_stop
            assert len(waiting) >= 5, "the restart must find jobs in the durable queue"
            with pytest.raises(BrokerUnavailable):
                producer.publish(env.app, body(), "during")
            outbox = ["during"]  # what the job store's outbox would keep
            inst.start()

            deadline = time.monotonic() + 20
            while outbox:
                try:
                    producer.publish(env.app, body(), outbox[0])
                    ids.append(outbox.pop(0))
                except BrokerUnavailable:
                    assert time.monotonic() < deadline, "producer never reconnected"
                    time.sleep(0.2)
            more = [f"after{i}" for i in range(10)]
            for mid in more:
                producer.publish(env.app, body(), mid)
            ids += more
            assert wait_until(lambda: set(ids) <= set(handled), 30), sorted(set(ids) - set(handled))
            # at-least-once: a job in flight at the stop may run twice, none is lost
            assert set(handled) == set(ids)
            assert len(handled) - len(ids) <= 1
        finally:
            env.teardown()

"""In-process broker for a single-machine node that runs without RabbitMQ.

Same semantics as the RabbitMQ broker where they apply: one queue per
application, ordered by message priority and then first in, first out; a
consumer of several applications takes the highest-priority message among
them (equal priorities in turn, so one busy queue cannot starve another);
each message goes to exactly one consumer (``consume`` may run in several
threads); it is settled only after the handler returns; RETRY
comes back after the delay for its attempt with attempt + 1, and past
``max_attempts`` it is dead-lettered with its reason; a consumer that dies
mid-job (its handler raises a BaseException such as SystemExit or
KeyboardInterrupt, or :meth:`EmbeddedBroker.simulate_crash`) puts its message
back at the head of the queue with ``redelivered=True``.

Not durable: messages live in memory and vanish with the process. That is
deliberate — the job store is the record of truth and its outbox re-publishes
every job that is still queued when the node starts, so a broker-level
journal would only duplicate it.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Sequence
from dataclasses import replace

import structlog

from radnode.queue.base import (
    APPLICATION_HEADER,
    ATTEMPT_HEADER,
    REASON_HEADER,
    BrokerUnavailable,
    Delivery,
    Handler,
    HandlerResult,
    Outcome,
    check_priority,
)
from radnode.model.jobs import ELECTIVE_PRIORITY

log = structlog.get_logger(__name__)


class SimulatedCrash(BaseException):
    """Raised inside a consumer by :meth:`EmbeddedBroker.simulate_crash`.

    A BaseException so that, like a real worker death, nothing settles the
    message: the consumer ends and the message is redelivered.
    """


class EmbeddedBroker:
    """Thread-safe in-memory broker (see module docstring)."""

    def __init__(self, max_attempts: int = 3, retry_delays: Sequence[float] = (5, 30, 120)) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if not retry_delays:
            raise ValueError("retry_delays must name at least one delay")
        self.max_attempts = max_attempts
        self.retry_delays = tuple(float(d) for d in retry_delays)
        self._cond = threading.Condition()
        # Per application a heap of (-priority, seq, delivery): highest priority
        # first, then arrival order; a redelivery gets a negative seq (the head).
        self._queues: dict[str, list[tuple[int, int, Delivery]]] = {}
        # (not_before monotonic time, seq, delivery) waiting for their retry delay
        self._delayed: list[tuple[float, int, Delivery]] = []
        self._seq = itertools.count()
        self._head_seq = itertools.count(-1, -1)
        self._dead: list[Delivery] = []
        self._inflight: dict[int, Delivery] = {}
        self._crash_requested: set[int] = set()
        self._closed = False

    # -- producer ----------------------------------------------------------

    def declare(self, applications: Sequence[str]) -> None:
        """Create the applications' queues (they are also created on first use)."""
        with self._cond:
            for app in applications:
                self._queues.setdefault(app, [])

    def publish(self, application: str, body: bytes, message_id: str, attempt: int = 1, priority: int = ELECTIVE_PRIORITY) -> None:
        """Enqueue now, behind waiting messages of the same or higher priority.
        Unlike RabbitMQ, a job for an application nobody consumes yet is kept
        (its queue is created on demand)."""
        delivery = Delivery(
            body=bytes(body),
            message_id=message_id,
            application=application,
            attempt=int(attempt),
            headers={ATTEMPT_HEADER: int(attempt)},
            priority=check_priority(priority),
        )
        with self._cond:
            if self._closed:
                raise BrokerUnavailable("broker closed")
            self._push(delivery)
            self._cond.notify_all()

    def _push(self, delivery: Delivery, *, head: bool = False) -> None:
        """Queue *delivery* at the tail of its priority (*head*: before every
        message of its priority, as a redelivery). Caller holds the lock."""
        seq = next(self._head_seq) if head else next(self._seq)
        heapq.heappush(self._queues.setdefault(delivery.application, []), (-delivery.priority, seq, delivery))

    # -- consumer ----------------------------------------------------------

    def _promote_due(self, now: float) -> None:
        """Move retries whose delay has passed to the tail of their queue (and priority)."""
        while self._delayed and self._delayed[0][0] <= now:
            _, _, d = heapq.heappop(self._delayed)
            self._push(d)

    def _take(self, applications: list[str], start: int) -> Delivery | None:
        """The highest-priority message at the head of *applications*' queues;
        among equal priorities the first application in turn from *start*."""
        n = len(applications)
        best: tuple[int, str] | None = None
        for i in range(n):
            app = applications[(start + i) % n]
            q = self._queues.get(app)
            if q and (best is None or q[0][0] < best[0]):
                best = (q[0][0], app)
        if best is None:
            return None
        return heapq.heappop(self._queues[best[1]])[2]

    def consume(self, applications: list[str], handler: Handler, stop: threading.Event) -> None:
        """Handle deliveries until *stop* is set (checked at least every 0.5 s).

        The highest-priority message of *applications* comes first; equal
        priorities are served round-robin so one busy queue cannot starve the
        others. The handler runs in the calling thread (no heartbeats to keep
        alive here).
        """
        if not applications:
            raise ValueError("consume needs at least one application")
        me = threading.get_ident()
        turn = 0
        while not stop.is_set():
            with self._cond:
                if self._closed:
                    return
                now = time.monotonic()
                self._promote_due(now)
                delivery = self._take(applications, turn)
                if delivery is None:
                    timeout = 0.5
                    if self._delayed:
                        timeout = max(0.0, min(timeout, self._delayed[0][0] - now))
                    self._cond.wait(timeout)
                    continue
                turn += 1
                self._inflight[me] = delivery
            try:
                self._check_crash(me)
                try:
                    result = handler(delivery)
                except Exception as exc:  # a handler bug must not kill the consumer
                    log.warning("handler raised", message_id=delivery.message_id, error=repr(exc))
                    result = HandlerResult.retry(f"handler raised {type(exc).__name__}: {exc}")
                self._check_crash(me)
            except BaseException:
                # The consumer dies with the message unsettled: redeliver it
                # at the head of its queue, as RabbitMQ does.
                with self._cond:
                    self._inflight.pop(me, None)
                    self._crash_requested.discard(me)
                    self._push(replace(delivery, redelivered=True), head=True)
                    self._cond.notify_all()
                raise
            if not isinstance(result, HandlerResult):
                result = HandlerResult.retry(f"handler returned {result!r}, not a HandlerResult")
            self._settle(me, delivery, result)

    def _check_crash(self, me: int) -> None:
        with self._cond:
            if me in self._crash_requested:
                raise SimulatedCrash("simulated consumer crash")

    def _settle(self, me: int, delivery: Delivery, result: HandlerResult) -> None:
        outcome, reason = result.outcome, result.reason
        if outcome is Outcome.RETRY and delivery.attempt >= self.max_attempts:
            outcome = Outcome.DEAD
            reason = f"{reason} (gave up after {delivery.attempt} attempts)"
        with self._cond:
            self._inflight.pop(me, None)
            if outcome is Outcome.RETRY:
                idx = min(delivery.attempt - 1, len(self.retry_delays) - 1)
                again = replace(
                    delivery,
                    attempt=delivery.attempt + 1,
                    redelivered=False,
                    headers={**delivery.headers, ATTEMPT_HEADER: delivery.attempt + 1, REASON_HEADER: reason},
                )
                heapq.heappush(self._delayed, (time.monotonic() + self.retry_delays[idx], next(self._seq), again))
                log.info("job retry scheduled", message_id=delivery.message_id, application=delivery.application,
                         attempt=again.attempt, delay=self.retry_delays[idx], reason=reason)
            elif outcome is Outcome.DEAD:
                self._dead.append(
                    replace(
                        delivery,
                        headers={**delivery.headers, REASON_HEADER: reason, APPLICATION_HEADER: delivery.application},
                    )
                )
                log.warning("job dead-lettered", message_id=delivery.message_id,
                            application=delivery.application, reason=reason)
            self._cond.notify_all()

    def simulate_crash(self, thread_ident: int | None = None) -> None:
        """Make consumers die with their in-flight message unsettled (tests).

        The consumer thread *thread_ident* (default: every consumer currently
        handling a message) raises SimulatedCrash as soon as its handler
        returns — the message is redelivered and the handler's result dropped,
        as when a worker process is killed mid-job.
        """
        with self._cond:
            targets = [thread_ident] if thread_ident is not None else list(self._inflight)
            self._crash_requested.update(targets)

    # -- ops ---------------------------------------------------------------

    def dead_letters(self) -> list[Delivery]:
        with self._cond:
            return list(self._dead)

    def purge_dead_letters(self) -> int:
        with self._cond:
            n = len(self._dead)
            self._dead.clear()
            return n

    def queue_depth(self, application: str) -> int:
        """Messages ready in the application's queue — like RabbitMQ's count,
        not those being handled or waiting for their retry delay."""
        with self._cond:
            self._promote_due(time.monotonic())
            return len(self._queues.get(application, ()))

    def close(self) -> None:
        """Stop accepting messages; consumers return at their next check."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

"""The broker interface that the router (producer) and workers (consumers)
share, with two implementations chosen by settings: RabbitMQ through pika
(``rabbitmq.py``) and an embedded in-process queue (``embedded.py``).

Semantics both implementations keep:

- ``publish`` returns only once the broker has taken responsibility for the
  message (RabbitMQ: persistent message + publisher confirm).
- One queue per application (``queue_name(app)``); a worker consumes the
  queues of the applications it serves with prefetch 1.
- Each message has a priority (0 … ``MAX_PRIORITY``, higher first): within a
  queue a higher priority overtakes waiting messages, and a consumer of
  several queues takes the highest-priority message it can get next. That
  orders waiting work only; what keeps a long elective job from delaying an
  urgent one is the workers' urgent lane (``radnode.jobs.lanes``), consumers
  that take nothing but urgent applications.
- A consumer's handler returns an ``Outcome``: ``ACK`` (done — results are
  stored), ``RETRY`` (requeue after a growing delay, attempt + 1) or ``DEAD``
  (dead-letter with a reason). The message is acknowledged only after the
  handler returns, so a worker that dies mid-job gets its job redelivered.
- A message whose attempt count reaches ``max_attempts`` on RETRY is
  dead-lettered instead.
- Producers and consumers reconnect with backoff after a broker failure.
"""

from __future__ import annotations

import enum
import threading
from dataclasses import dataclass, field
from typing import Callable, Protocol

from radnode.model.jobs import ELECTIVE_PRIORITY, MAX_PRIORITY

EXCHANGE = "radnode.jobs"
DEAD_LETTER_EXCHANGE = "radnode.dlx"
DEAD_LETTER_QUEUE = "radnode.dead"
ATTEMPT_HEADER = "x-radnode-attempt"
REASON_HEADER = "x-radnode-reason"


#: Header naming the application on dead-lettered messages.
APPLICATION_HEADER = "x-radnode-application"


def queue_name(application: str, namespace: str = "radnode") -> str:
    """The durable queue of one application's analyze jobs.

    *namespace* prefixes every broker name (``radnode`` in production); tests
    use a unique one so parallel runs on a shared broker never interfere.
    Version 2 of the name: these queues take message priorities, which a
    queue declared without them cannot (see ``rabbitmq.py``). Namespaces
    have no dots and ``analyze-v2`` is not ``analyze``, so no application's
    name can make its queue collide with another's legacy queue.
    """
    return f"{namespace}.analyze-v2.{application}"


def legacy_queue_name(application: str, namespace: str = "radnode") -> str:
    """The queue an application had before queues took priorities (moved and
    deleted by the RabbitMQ broker at connect)."""
    return f"{namespace}.analyze.{application}"


class Outcome(enum.Enum):
    ACK = "ack"
    RETRY = "retry"
    DEAD = "dead"


@dataclass(frozen=True)
class HandlerResult:
    outcome: Outcome
    reason: str = ""

    @classmethod
    def ack(cls) -> "HandlerResult":
        return cls(Outcome.ACK)

    @classmethod
    def retry(cls, reason: str) -> "HandlerResult":
        return cls(Outcome.RETRY, reason)

    @classmethod
    def dead(cls, reason: str) -> "HandlerResult":
        return cls(Outcome.DEAD, reason)


@dataclass(frozen=True)
class Delivery:
    """One message handed to a consumer."""

    body: bytes
    message_id: str
    application: str
    #: 1 for the first delivery; incremented on each RETRY.
    attempt: int = 1
    #: True when the broker re-delivers after a consumer died without ack.
    redelivered: bool = False
    headers: dict[str, object] = field(default_factory=dict)
    #: Queue priority it was published with (0 … MAX_PRIORITY).
    priority: int = ELECTIVE_PRIORITY


def check_priority(priority: int) -> int:
    """A message priority both brokers accept; anything else is a bug upstream."""
    if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= MAX_PRIORITY:
        raise ValueError(f"message priority must be an integer 0-{MAX_PRIORITY}, got {priority!r}")
    return priority


Handler = Callable[[Delivery], HandlerResult]


class BrokerUnavailable(RuntimeError):
    """The broker could not take the message now (the outbox will retry)."""


class UnroutableMessage(BrokerUnavailable):
    """No queue exists for the message's application (yet).

    A subclass of BrokerUnavailable because the outbox should keep the job:
    the queue appears once the application is declared (``declare``) or a
    worker for it starts consuming.
    """


class Broker(Protocol):
    """What producers and consumers need from a message broker."""

    max_attempts: int

    def publish(self, application: str, body: bytes, message_id: str, attempt: int = 1, priority: int = ELECTIVE_PRIORITY) -> None:
        """Publish durably (confirmed) with *priority*. Raises BrokerUnavailable on failure."""
        ...

    def consume(self, applications: list[str], handler: Handler, stop: threading.Event) -> None:
        """Run *handler* for each delivery until *stop* is set (blocking).

        Reconnects with backoff on broker failure; acknowledges according to
        the handler's result only after it returns.
        """
        ...

    def dead_letters(self) -> list[Delivery]:
        """Messages in the dead-letter queue, with their reason header (for ops and tests)."""
        ...

    def close(self) -> None: ...

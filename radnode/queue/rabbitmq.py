"""RabbitMQ broker through pika (``BlockingConnection``).

Topology (declared idempotently on every connect; ``ns`` = ``namespace``,
``radnode`` in production)::

    publish ──► ns.jobs (direct, durable) ──rk=app──► ns.analyze-v2.<app>
                                                        (durable, x-dead-letter-exchange=ns.dlx,
                                                         x-max-priority=MAX_PRIORITY)
    RETRY   ──► ns.retry (headers, durable) ──x-radnode-delay=<q>──► ns.retry.<delay>
                                                        (durable, x-message-ttl=<delay>,
                                                         x-dead-letter-exchange=ns.jobs)
                ... TTL expires: dead-lettered to ns.jobs with the ORIGINAL routing key (= app)
    DEAD    ──► ns.dlx (fanout, durable) ──► ns.dead (durable)

Why a *headers* exchange for retries: when a message expires in a TTL queue,
RabbitMQ dead-letters it with the routing key it was published with (unless
the queue sets ``x-dead-letter-routing-key``). Publishing the retry copy
through the default exchange would make that key the retry queue's name,
which routes nowhere in ``ns.jobs``; a per-queue dead-letter routing key
would need one retry queue per application per delay. Publishing the copy to
a headers exchange with routing key = application keeps the application as
the routing key (a headers exchange ignores it) while a header
(``x-radnode-delay``) picks the retry queue — so there is one retry queue per
delay, shared by all applications, and an expired copy lands back in its
application's queue. Every message in one retry queue has the same TTL, so
per-queue TTL expires them strictly in order (no head-of-line blocking).

``ns.dlx`` is a fanout exchange so both our explicit dead-letter publishes
(reason in ``x-radnode-reason``, application in ``x-radnode-application``)
and anything the broker itself dead-letters from an application queue
(rejected/expired) end in ``ns.dead`` whatever their routing key.

Delivery guarantees: at least once. A publish whose confirm was lost in a
connection failure is re-sent, and a message whose ack was lost is
redelivered, so consumers must be idempotent per ``message_id`` (the job
store's job). Queues are classic durable queues: changing their arguments
later (e.g. the TTLs) needs new names — a redeclare with other arguments
fails with PRECONDITION_FAILED; new delays get new retry queues.

Priorities (triage, issue 16). Messages carry the job's priority
(``BasicProperties.priority``, 0 … ``MAX_PRIORITY``) and application queues
are declared with ``x-max-priority``, so an urgent message overtakes the
elective ones waiting in the same queue. A consumer of several queues holds
one message per queue (prefetch is per consumer) and handles the
highest-priority one it holds first. Retry and dead-letter copies keep the
priority; retry queues need none (one TTL each, strictly in order).

Why versioned queue names with a move, rather than priorities only on new
queues: a deployment upgraded from a version without priorities has its
application queues declared without ``x-max-priority``, and RabbitMQ never
changes a queue's arguments — redeclaring ``ns.analyze.<app>`` with the
argument fails with PRECONDITION_FAILED and closes the channel. Declaring
the priority only where a queue is new would leave exactly the upgraded
sites (the ones with hemorrhage jobs waiting behind a backlog) without it,
and behaviour would depend on a queue's history. So the queues have a new
name, ``ns.analyze-v2.<app>``, and every connect that declares an
application also migrates its legacy queue ``ns.analyze.<app>`` if one
exists: unbind it from ``ns.jobs`` (new publishes, and retries coming back
from the TTL queues, now reach only the new queue), move its messages
(confirmed publish, then ack: a crash leaves a duplicate, which the job
store's claim ignores, never a loss) with the application's priority when
they carry none and a header remembering a redelivery, then delete it only
if it is empty and unused (``if_empty``/``if_unused``). A legacy queue still
used by a worker of the previous version is kept and moved again at the
next connect. Old and new versions side by side during an upgrade is safe
but wasteful: the old ones re-bind the legacy queue on connect, so a
message may arrive in both queues — a duplicate the claim turns into a
no-op.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import pika
import pika.exceptions
import structlog
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from radnode.queue.base import (
    APPLICATION_HEADER,
    ATTEMPT_HEADER,
    REASON_HEADER,
    BrokerUnavailable,
    Delivery,
    Handler,
    HandlerResult,
    Outcome,
    UnroutableMessage,
    check_priority,
    legacy_queue_name,
    queue_name,
)
from radnode.model.jobs import ELECTIVE_PRIORITY, MAX_PRIORITY

log = structlog.get_logger(__name__)

#: Header that routes a retry copy to the retry queue of its delay.
DELAY_HEADER = "x-radnode-delay"
#: Set on a message moved from a legacy queue that had been delivered before
#: (the move itself makes a new message, which the broker would not flag):
#: the worker may then take over a job whose previous holder died.
REDELIVERED_HEADER = "x-radnode-redelivered"
#: Headers the broker adds on dead-lettering; dropped from retry copies so
#: they do not grow with every cycle.
_BROKER_HEADERS = ("x-death", "x-first-death-exchange", "x-first-death-queue", "x-first-death-reason",
                   "x-last-death-exchange", "x-last-death-queue", "x-last-death-reason")

#: Failures after which a fresh connection (and topology declare) may help.
_RECOVERABLE = (
    pika.exceptions.AMQPError,  # connection/channel closed, stream lost, unroutable, nack ...
    OSError,
)


def _delay_label(seconds: float) -> str:
    ms = int(round(seconds * 1000))
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def _as_int(value: object, default: int) -> int:
    """Attempt header as int; a malformed header counts as *default*."""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    try:
        return max(1, int(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default


def _as_str(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


class RabbitBroker:
    """Broker on RabbitMQ: durable queues, persistent confirmed publishes,
    delayed retries through TTL queues, a dead-letter queue.

    ``publish`` is thread-safe (one publisher connection behind a lock: a
    confirmed publish takes ~1 ms, so the lock is never the bottleneck for
    DICOM jobs). Each ``consume`` call opens its own connection, so several
    consumer threads or processes can run side by side.
    """

    def __init__(
        self,
        url: str,
        *,
        max_attempts: int = 3,
        retry_delays: Sequence[float] = (5, 30, 120),
        prefetch: int = 1,
        heartbeat: int = 30,
        connect_timeout: float = 5,
        namespace: str = "radnode",
        applications: Sequence[str] = (),
        publish_retry_seconds: float | None = None,
        priorities: Mapping[str, int] | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if not retry_delays:
            raise ValueError("retry_delays must name at least one delay")
        self.url = url
        self.max_attempts = max_attempts
        self.retry_delays = tuple(float(d) for d in retry_delays)
        self.prefetch = prefetch
        self.namespace = namespace
        self.exchange = f"{namespace}.jobs"
        self.retry_exchange = f"{namespace}.retry"
        self.dead_letter_exchange = f"{namespace}.dlx"
        self.dead_letter_queue = f"{namespace}.dead"
        self.retry_queue_names = [f"{namespace}.retry.{_delay_label(d)}" for d in self.retry_delays]
        # A publish tries for this long (reconnecting) before BrokerUnavailable.
        self.publish_retry_seconds = publish_retry_seconds if publish_retry_seconds is not None else 2 * connect_timeout
        params = pika.URLParameters(url)
        params.heartbeat = heartbeat
        params.socket_timeout = connect_timeout
        params.stack_timeout = 2 * connect_timeout
        params.blocked_connection_timeout = max(10.0, 2 * connect_timeout)
        params.connection_attempts = 1
        params.retry_delay = 0
        self._params = params
        self._applications: set[str] = set(applications)
        #: Priority given to messages moved from a legacy queue (published without one).
        self.priorities = {app: check_priority(p) for app, p in (priorities or {}).items()}
        #: Applications whose legacy queue this client saw gone (no check at each reconnect).
        self._legacy_gone: set[str] = set()
        self._lock = threading.Lock()
        self._conn: BlockingConnection | None = None
        self._channel: BlockingChannel | None = None
        self._closed = False

    # -- topology ------------------------------------------------------------

    def _declare(self, ch: BlockingChannel, applications: Sequence[str] | set[str]) -> None:
        """Declare exchanges and queues (idempotent; same arguments every time)."""
        ch.exchange_declare(self.exchange, "direct", durable=True)
        ch.exchange_declare(self.dead_letter_exchange, "fanout", durable=True)
        ch.queue_declare(self.dead_letter_queue, durable=True)
        ch.queue_bind(self.dead_letter_queue, self.dead_letter_exchange)
        ch.exchange_declare(self.retry_exchange, "headers", durable=True)
        for delay, q in zip(self.retry_delays, self.retry_queue_names):
            ch.queue_declare(
                q,
                durable=True,
                arguments={"x-message-ttl": int(round(delay * 1000)), "x-dead-letter-exchange": self.exchange},
            )
            ch.queue_bind(q, self.retry_exchange, arguments={"x-match": "all", DELAY_HEADER: q})
        for app in sorted(set(applications)):
            q = queue_name(app, self.namespace)
            ch.queue_declare(
                q, durable=True, arguments={"x-dead-letter-exchange": self.dead_letter_exchange, "x-max-priority": MAX_PRIORITY}
            )
            ch.queue_bind(q, self.exchange, routing_key=app)
            if app not in self._legacy_gone:
                self._migrate_legacy(ch.connection, app)

    def _migrate_legacy(self, conn: BlockingConnection, app: str) -> None:
        """Move *app*'s legacy queue (declared without priorities) into its
        new queue and delete it when empty and unused (module docstring).

        On its own channel: a passive declare of a missing queue, or a
        refused conditional delete, closes the channel it runs on.
        """
        legacy = legacy_queue_name(app, self.namespace)
        ch = conn.channel()
        try:
            try:
                waiting = int(ch.queue_declare(legacy, passive=True).method.message_count)
            except pika.exceptions.ChannelClosedByBroker as exc:
                if exc.reply_code == 404:
                    self._legacy_gone.add(app)
                    return
                raise
            ch.queue_unbind(legacy, self.exchange, routing_key=app)
            ch.confirm_delivery()
            moved = 0
            # At most what was waiting: should a process of the previous version
            # re-bind the legacy queue meanwhile, a moved copy would come back.
            while moved < waiting:
                method, props, body = ch.basic_get(legacy, auto_ack=False)
                if method is None:
                    break
                headers = dict(props.headers or {})
                if method.redelivered:
                    headers[REDELIVERED_HEADER] = 1
                priority = props.priority if props.priority is not None else self.priorities.get(app, ELECTIVE_PRIORITY)
                ch.basic_publish(self.exchange, app, body, _copy_props(props, headers, min(int(priority), MAX_PRIORITY)), mandatory=True)
                ch.basic_ack(method.delivery_tag)
                moved += 1
            try:
                ch.queue_delete(legacy, if_unused=True, if_empty=True)
            except pika.exceptions.ChannelClosedByBroker as exc:
                if exc.reply_code != 406:  # PRECONDITION_FAILED: still used or not empty
                    raise
                log.info("legacy queue still in use; kept until a later connect", queue=legacy, moved=moved)
                return
            self._legacy_gone.add(app)
            log.info("legacy queue migrated to a priority queue", legacy=legacy, queue=queue_name(app, self.namespace), moved=moved)
        finally:
            if ch.is_open:
                ch.close()

    def declare(self, applications: Sequence[str]) -> None:
        """Create the queues of *applications* now (and on every reconnect).

        Why: ``publish`` is mandatory — a job for an application without a
        queue is refused (UnroutableMessage) rather than silently dropped —
        so the router declares its configured applications at start.
        """
        with self._lock:
            self._applications.update(applications)
            ch = self._ensure_channel()
            self._declare(ch, applications)

    def _connect(self) -> BlockingConnection:
        return BlockingConnection(self._params)

    def _ensure_channel(self) -> BlockingChannel:
        """The publisher channel (confirm mode); caller holds the lock."""
        if self._closed:
            raise BrokerUnavailable("broker closed")
        if self._conn is not None and self._conn.is_open and self._channel is not None and self._channel.is_open:
            # Service heartbeats and notice a connection the broker dropped
            # while we were idle (no heartbeats are sent between publishes)
            # so we reconnect before publishing instead of failing.
            try:
                self._conn.process_data_events(0)
                if self._conn.is_open and self._channel.is_open:
                    return self._channel
            except _RECOVERABLE as exc:
                log.info("idle publisher connection was dropped; reconnecting", error=repr(exc))
        self._drop_connection()
        conn = self._connect()
        try:
            ch = conn.channel()
            ch.confirm_delivery()
            self._declare(ch, self._applications)
        except BaseException:
            _close_quietly(conn)
            raise
        self._conn, self._channel = conn, ch
        return ch

    def _drop_connection(self) -> None:
        if self._conn is not None:
            _close_quietly(self._conn)
        self._conn = self._channel = None

    # -- publish -------------------------------------------------------------

    def publish(self, application: str, body: bytes, message_id: str, attempt: int = 1, priority: int = ELECTIVE_PRIORITY) -> None:
        """Publish persistently with *priority* and wait for the broker's confirm.

        Reconnects with backoff for up to ``publish_retry_seconds``, then
        raises BrokerUnavailable (the outbox keeps the job). An application
        without a queue raises UnroutableMessage.
        """
        props = pika.BasicProperties(
            content_type="application/json",
            delivery_mode=pika.DeliveryMode.Persistent,
            message_id=message_id,
            headers={ATTEMPT_HEADER: int(attempt)},
            priority=check_priority(priority),
        )
        self._publish(self.exchange, application, body, props)

    def _publish(self, exchange: str, routing_key: str, body: bytes, props: pika.BasicProperties) -> None:
        deadline = time.monotonic() + self.publish_retry_seconds
        delay = 0.0
        with self._lock:
            while True:
                try:
                    ch = self._ensure_channel()
                    ch.basic_publish(exchange, routing_key, body, props, mandatory=True)
                    return
                except pika.exceptions.UnroutableError as exc:
                    raise UnroutableMessage(
                        f"no queue bound for {routing_key!r} on {exchange!r}; declare the application first"
                    ) from exc
                except BrokerUnavailable:
                    raise
                except _RECOVERABLE as exc:
                    self._drop_connection()
                    if time.monotonic() + delay >= deadline:
                        raise BrokerUnavailable(f"RabbitMQ unavailable: {exc!r}") from exc
                    log.warning("publish failed, reconnecting", error=repr(exc), retry_in=delay)
                    time.sleep(delay)
                    delay = min(max(delay * 2, 0.2), 2.0)

    # -- consume -------------------------------------------------------------

    def consume(self, applications: list[str], handler: Handler, stop: threading.Event) -> None:
        """Handle deliveries of *applications* until *stop* is set.

        Reconnects forever with exponential backoff (0.5 s → 10 s). When
        *stop* is set while a handler runs, the handler is allowed to finish
        and its message is settled first — abandoning it would let another
        worker start the same job while this one still runs it. A handler
        that raises a BaseException (SystemExit, KeyboardInterrupt) "kills"
        this consumer: its message is left unacknowledged (the broker
        redelivers it when the connection closes) and the exception
        propagates.
        """
        backoff = [0.5]

        def connected() -> None:
            backoff[0] = 0.5

        while not stop.is_set():
            try:
                self._consume_connection(applications, handler, stop, connected)
            except _RECOVERABLE as exc:
                log.warning("consumer connection lost", error=repr(exc), retry_in=backoff[0])
            if stop.wait(backoff[0]):
                break
            backoff[0] = min(backoff[0] * 2, 10.0)

    def _consume_connection(
        self, applications: list[str], handler: Handler, stop: threading.Event, connected: Any
    ) -> None:
        conn = self._connect()
        try:
            ch = conn.channel()
            self._declare(ch, applications)
            ch.basic_qos(prefetch_count=self.prefetch)
            pub = conn.channel()
            pub.confirm_delivery()
            # Prefetch is per consumer, so this holds up to one message per
            # queue; the highest priority goes first, then the earliest.
            pending: list[tuple[int, int, str, Any, Any, bytes]] = []
            arrivals = itertools.count()
            for app in applications:

                def on_message(_c: Any, method: Any, props: Any, body: bytes, app: str = app) -> None:
                    pending.append((props.priority or ELECTIVE_PRIORITY, next(arrivals), app, method, props, body))

                ch.basic_consume(queue_name(app, self.namespace), on_message_callback=on_message)
            connected()
            log.info("consuming", applications=applications, namespace=self.namespace)
            while not stop.is_set():
                if not pending:
                    conn.process_data_events(time_limit=0.5)
                    continue
                chosen = max(pending, key=lambda m: (m[0], -m[1]))
                pending.remove(chosen)
                _, _, app, method, props, body = chosen
                self._handle(conn, ch, pub, app, method, props, body, handler)
        finally:
            # Closing returns unacknowledged (prefetched) messages to their queue.
            _close_quietly(conn)

    def _handle(
        self,
        conn: BlockingConnection,
        ch: BlockingChannel,
        pub: BlockingChannel,
        app: str,
        method: Any,
        props: Any,
        body: bytes,
        handler: Handler,
    ) -> None:
        headers = dict(props.headers or {})
        delivery = Delivery(
            body=body,
            message_id=_as_str(props.message_id),
            application=app,
            attempt=_as_int(headers.get(ATTEMPT_HEADER), 1),
            redelivered=bool(method.redelivered) or bool(headers.get(REDELIVERED_HEADER)),
            headers=headers,
            priority=props.priority or ELECTIVE_PRIORITY,
        )
        box: dict[str, Any] = {}
        done = threading.Event()

        def run() -> None:
            try:
                box["result"] = handler(delivery)
            except Exception as exc:  # the handler's bug must not kill the consumer
                log.warning("handler raised", message_id=delivery.message_id, error=repr(exc))
                box["result"] = HandlerResult.retry(f"handler raised {type(exc).__name__}: {exc}")
            except BaseException as exc:
                box["fatal"] = exc
            finally:
                done.set()
                try:  # wake the connection thread now rather than at its next tick
                    conn.add_callback_threadsafe(lambda: None)
                except Exception:
                    pass

        # The handler runs in its own thread while this (the connection's)
        # thread keeps servicing heartbeats: a job may take minutes, longer
        # than 2 heartbeat intervals, after which the broker would drop us.
        worker = threading.Thread(target=run, name=f"radnode-job-{app}", daemon=True)
        worker.start()
        while not done.is_set():
            try:
                conn.process_data_events(time_limit=1.0)
            except _RECOVERABLE:
                # The broker already requeued the message (it will be
                # redelivered, maybe to another worker); let the job finish
                # since it cannot be cancelled, then drop its result.
                done.wait()
                log.warning("connection lost while handling; result dropped, message will be redelivered",
                            message_id=delivery.message_id)
                raise
        worker.join()
        if "fatal" in box:
            raise box["fatal"]
        result = box.get("result")
        if not isinstance(result, HandlerResult):
            result = HandlerResult.retry(f"handler returned {result!r}, not a HandlerResult")
        self._settle(ch, pub, app, method, props, body, delivery, result)

    def _settle(
        self,
        ch: BlockingChannel,
        pub: BlockingChannel,
        app: str,
        method: Any,
        props: Any,
        body: bytes,
        delivery: Delivery,
        result: HandlerResult,
    ) -> None:
        """Ack, or first publish the retry/dead copy (confirmed) and then ack.

        Copy-then-ack: a crash between the two leaves a duplicate, never a
        lost job (at-least-once).
        """
        outcome, reason = result.outcome, result.reason
        if outcome is Outcome.RETRY and delivery.attempt >= self.max_attempts:
            outcome = Outcome.DEAD
            reason = f"{reason} (gave up after {delivery.attempt} attempts)"
        headers = {k: v for k, v in delivery.headers.items() if k not in _BROKER_HEADERS and k != REDELIVERED_HEADER}
        if outcome is Outcome.RETRY:
            idx = min(delivery.attempt - 1, len(self.retry_delays) - 1)
            headers[ATTEMPT_HEADER] = delivery.attempt + 1
            headers[DELAY_HEADER] = self.retry_queue_names[idx]
            headers[REASON_HEADER] = reason
            pub.basic_publish(self.retry_exchange, app, body, _copy_props(props, headers, props.priority), mandatory=True)
            log.info("job retry scheduled", message_id=delivery.message_id, application=app,
                     attempt=delivery.attempt + 1, delay=self.retry_delays[idx], reason=reason)
        elif outcome is Outcome.DEAD:
            headers[REASON_HEADER] = reason
            headers[APPLICATION_HEADER] = app
            pub.basic_publish(self.dead_letter_exchange, app, body, _copy_props(props, headers, props.priority), mandatory=True)
            log.warning("job dead-lettered", message_id=delivery.message_id, application=app, reason=reason)
        ch.basic_ack(method.delivery_tag)

    # -- ops -----------------------------------------------------------------

    @contextmanager
    def _ops_channel(self) -> Iterator[BlockingChannel]:
        """A throw-away channel on the publisher connection (under the lock)."""
        with self._lock:
            try:
                conn_ch = self._ensure_channel()
                del conn_ch
                assert self._conn is not None
                ch = self._conn.channel()
            except _RECOVERABLE as exc:
                self._drop_connection()
                raise BrokerUnavailable(f"RabbitMQ unavailable: {exc!r}") from exc
            try:
                yield ch
            finally:
                if ch.is_open:
                    try:
                        ch.close()  # returns unacked basic_get messages to the queue
                    except _RECOVERABLE:
                        self._drop_connection()

    def dead_letters(self, limit: int = 1000) -> list[Delivery]:
        """Up to *limit* messages of the dead-letter queue, left in place.

        Reads with basic_get without ack; closing the channel puts them back
        in their original order.
        """
        out: list[Delivery] = []
        with self._ops_channel() as ch:
            while len(out) < limit:
                method, props, body = ch.basic_get(self.dead_letter_queue, auto_ack=False)
                if method is None:
                    break
                headers = dict(props.headers or {})
                if REASON_HEADER not in headers and headers.get("x-death"):
                    first = headers["x-death"][0]
                    headers[REASON_HEADER] = f"broker: {_as_str(first.get('reason'))}"
                out.append(
                    Delivery(
                        body=body,
                        message_id=_as_str(props.message_id),
                        application=_as_str(headers.get(APPLICATION_HEADER)) or method.routing_key,
                        attempt=_as_int(headers.get(ATTEMPT_HEADER), 1),
                        redelivered=bool(method.redelivered),
                        headers=headers,
                        priority=props.priority or ELECTIVE_PRIORITY,
                    )
                )
        return out

    def purge_dead_letters(self) -> int:
        """Empty the dead-letter queue; returns how many messages it held."""
        with self._ops_channel() as ch:
            frame = ch.queue_purge(self.dead_letter_queue)
            return int(frame.method.message_count)

    def queue_depth(self, application: str) -> int:
        """Messages ready in the application's queue (not counting unacked
        ones being handled); 0 when the queue does not exist."""
        with self._ops_channel() as ch:
            try:
                frame = ch.queue_declare(queue_name(application, self.namespace), passive=True)
            except pika.exceptions.ChannelClosedByBroker as exc:
                if exc.reply_code == 404:
                    return 0
                raise
            return int(frame.method.message_count)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._drop_connection()


def _copy_props(props: Any, headers: dict[str, Any], priority: int | None) -> pika.BasicProperties:
    return pika.BasicProperties(
        content_type=props.content_type or "application/json",
        delivery_mode=pika.DeliveryMode.Persistent,
        message_id=props.message_id,
        correlation_id=props.correlation_id,
        timestamp=props.timestamp,
        headers=headers,
        priority=priority,
    )


def _close_quietly(conn: BlockingConnection) -> None:
    try:
        if conn.is_open:
            conn.close()
    except Exception:
        pass

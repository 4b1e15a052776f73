"""Compose the stages into the processes radnode runs.

``radnode serve`` runs every stage in one process with the embedded queue
(or RabbitMQ when a broker URL is set); ``listen``, ``worker`` and ``web`` run
stages apart, sharing the job store and RabbitMQ. Each stage talks to the
others only through durable state (the index, the job store, the queue), so
each can be restarted on its own.
"""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import structlog
from sqlalchemy.orm import Session, sessionmaker

from radnode.analyzers.registry import Registry
from radnode.jobs.bounces import BouncePoller
from radnode.jobs.lanes import Lane, plan_lanes
from radnode.jobs.worker import JobHandler, ResultWriter
from radnode.store import jobs as jobstore
from radnode.queue.base import Broker
from radnode.queue.factory import make_broker
from radnode.queue.outbox import Outbox
from radnode.settings import Settings
from radnode.store.db import open_store

log = structlog.get_logger(__name__)


def broker_for(settings: Settings, applications: Sequence[str] = (), registry: Registry | None = None) -> Broker:
    """The configured broker, with the queues of *applications* declared
    (and, given the *registry*, their priorities for jobs moved from a
    RabbitMQ queue of the previous version)."""
    q = settings.queue
    return make_broker(
        settings.broker_url,
        max_attempts=q.max_attempts,
        retry_delays=tuple(q.retry_delays),
        prefetch=q.prefetch,
        namespace=q.namespace,
        applications=tuple(applications),
        priorities=registry.priorities(applications) if registry is not None else {},
    )


@dataclass
class WorkerPool:
    """Consumer threads running jobs, in lanes (``radnode.jobs.lanes``: urgent
    applications get threads of their own); SIGTERM drains within a deadline."""

    settings: Settings
    sessions: sessionmaker[Session]
    broker: Broker
    registry: Registry
    applications: Sequence[str]
    concurrency: int = 1
    writers: Sequence[ResultWriter] = ()
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.handler = JobHandler(
            sessions=self.sessions,
            registry=self.registry,
            spool_root=self.settings.spool_dir,
            work_root=self.settings.work_dir,
            max_attempts=self.settings.queue.max_attempts,
            writers=self.writers,
        )

    @property
    def lanes(self) -> list[Lane]:
        return plan_lanes(
            self.applications,
            self.registry.urgent,
            concurrency=self.concurrency,
            urgent_concurrency=self.settings.worker.urgent_concurrency,
        )

    def start(self) -> None:
        threading.Thread(target=self._retention, name="workdir-retention", daemon=True).start()
        lanes = self.lanes
        for lane in lanes:
            for i in range(lane.threads):
                t = threading.Thread(
                    target=self.broker.consume,
                    args=(list(lane.applications), self.handler.handle, self._stop),
                    name=f"worker-{lane.name}-{i}",
                    daemon=True,
                )
                t.start()
                self._threads.append(t)
        log.info("workers started", lanes={lane.name: {"applications": list(lane.applications), "threads": lane.threads} for lane in lanes})

    def _retention(self, every: float = 3600.0) -> None:
        """Apply ``analyzers.keep_workdirs_days`` at start and then hourly."""
        while True:
            try:
                prune_workdirs(self.settings)
            except OSError as exc:
                log.warning("work folder retention failed", error=str(exc)[:200])
            if self._stop.wait(every):
                return

    def stop(self, deadline: float | None = None) -> bool:
        """Stop taking jobs; wait up to *deadline* for running ones. True if drained."""
        self._stop.set()
        end = time.monotonic() + (deadline if deadline is not None else self.settings.worker.shutdown_deadline)
        for t in self._threads:
            t.join(timeout=max(end - time.monotonic(), 0))
        drained = not any(t.is_alive() for t in self._threads)
        if not drained:
            log.warning("shutdown deadline passed with a job running; it will be redelivered")
        return drained


def prune_workdirs(settings: Settings) -> list[Path]:
    """Delete jobs' intermediate images older than the retention setting.

    Only preprocessing folders (which carry their marker file) go; the
    result objects and reports of each job stay for the web pages.
    """
    from radnode.analyzers.preprocessing import cleanup_workdirs

    return cleanup_workdirs(settings.work_dir, settings.analyzers.keep_workdirs_days)


class StopSignal:
    """SIGTERM and SIGINT, caught from the moment this is made (before a command starts its stages).

    Why: starting can take seconds (extra listener processes import radnode
    afresh); a SIGTERM in that window used to kill the command with the
    default action, skipping every clean-up. Now it is remembered, the start
    completes, and ``wait`` returns at once, so the command stops cleanly.
    """

    def __init__(self) -> None:
        self._stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: self._stop.set())
        signal.signal(signal.SIGINT, lambda *_: self._stop.set())

    def wait(self) -> None:
        """Block until a signal came (or return at once if one already did)."""
        while not self._stop.wait(1.0):
            pass



def recover_interrupted(sessions: sessionmaker[Session], embedded: bool) -> None:
    """With the embedded queue, jobs that were running when the process died go back to the outbox."""
    if not embedded:
        return  # RabbitMQ redelivers unacknowledged messages itself
    with sessions.begin() as session:
        ids = jobstore.requeue_interrupted(session, actor="startup")
    if ids:
        log.info("requeued jobs interrupted by a restart", count=len(ids))


def make_outbox(settings: Settings, sessions: sessionmaker[Session], broker: Broker) -> Outbox:
    return Outbox(sessions, broker, settings.queue.outbox_interval)


def bounce_poller(settings: Settings, sessions: sessionmaker[Session]) -> BouncePoller | None:
    """The thread that reads ``delivery.smtp.bounce_mailbox``, or None when it is not set."""
    if settings.delivery.smtp.bounce_mailbox is None:
        return None
    return BouncePoller(settings.delivery.smtp, sessions)


class Node:
    """Every stage in one process (``radnode serve``, the demo): listener,
    router, outbox, broker (embedded unless a URL is set) and workers."""

    def __init__(self, settings: Settings, *, with_web: bool = False) -> None:
        from radnode.listener.service import ListenerService
        from radnode.routing.setup import build_router
        from radnode.sr_writer.dispatch import DicomResultWriter

        self.settings = settings
        self.engine, self.sessions = open_store(settings)
        self.registry = Registry.from_settings(settings)
        self.broker = broker_for(settings, self.registry.names(), self.registry)
        self.outbox = make_outbox(settings, self.sessions, self.broker)
        self.router, self.watcher = build_router(settings, self.sessions, self.registry, on_jobs=self.outbox.kick)
        self.applications = settings.worker.applications or self.registry.names()
        self.pool = WorkerPool(
            settings,
            self.sessions,
            self.broker,
            self.registry,
            self.applications,
            settings.worker.concurrency,
            writers=[DicomResultWriter(settings, self.sessions)],
        )
        self.listener = ListenerService(settings, sink=self.router, store=(self.engine, self.sessions))
        self.bounces = bounce_poller(settings, self.sessions)
        self.web: Any = None
        if with_web:
            import uvicorn

            from radnode.tls import uvicorn_ssl_kwargs
            from radnode.web.app import create_app

            config = uvicorn.Config(create_app(settings), host=settings.web.host, port=settings.web.port, log_level="warning", **uvicorn_ssl_kwargs(settings))
            self.web = uvicorn.Server(config)

    def start(self) -> None:
        recover_interrupted(self.sessions, embedded=self.settings.broker_url is None)
        self.watcher.start()
        self.outbox.start()
        if self.applications:
            self.pool.start()
        self.listener.start()
        if self.bounces is not None:
            self.bounces.start()
        if self.web is not None:
            threading.Thread(target=self.web.run, name="radnode-web", daemon=True).start()
            log.info("web app started", host=self.settings.web.host, port=self.settings.web.port)

    def stop(self) -> None:
        if self.web is not None:
            self.web.should_exit = True
        if self.bounces is not None:
            self.bounces.stop()
        self.listener.stop()
        self.pool.stop()
        self.outbox.stop()
        self.watcher.stop()
        self.broker.close()
        self.engine.dispose()
